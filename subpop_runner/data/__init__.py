"""Datasets (`base.Dataset`, one file each): each returns `Splits` (train = the victim's D,
aux = D_aux, test = D_test)."""
