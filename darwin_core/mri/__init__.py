"""The MRI of a pair: static weight profile, divergence, probing with texts, MoE health, the per-tensor prescription."""
