"""Evolution: the config, the ask/tell CMA-ES loop, the model problem, the resident child, the held-out report and the pipeline that runs them."""
