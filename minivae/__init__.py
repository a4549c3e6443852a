"""minivae: a Variational Autoencoder built from scratch on a tiny autodiff engine."""
