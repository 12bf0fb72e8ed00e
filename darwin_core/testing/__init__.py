"""Test support shipped with the package: tiny seeded fixture models (`darwin_core.testing.fixtures`).

Imported explicitly by tests and demos; nothing here is imported eagerly, so `import darwin_core` stays light.
"""
