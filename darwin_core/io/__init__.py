"""Files on disk: the only code that opens tensor files (safetensors header, reader, sharded writer, dtype table), the run folder's layout, atomic writes and hashes."""
