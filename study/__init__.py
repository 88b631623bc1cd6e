"""study: the Ray Tune layer (trainable, launcher, lr search) and the analysis of its experiments."""
