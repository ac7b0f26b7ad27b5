"""Feature code shared by the live stream and training, so there is no training/serving skew."""
