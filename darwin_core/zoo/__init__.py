"""The embedded demo family (base, father, mother): its builder, manifest and checks."""
