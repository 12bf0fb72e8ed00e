"""The child's check-up: layer-level interference and function loss against both parents."""
