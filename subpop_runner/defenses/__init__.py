"""Defenses (paper Sec. 7): each sees the victims' training rows, never which are poison, and
returns what it keeps. One file per algorithm: `trim`, `sever`, `activation_clustering`,
`spectral_signatures`, `fine_pruning`; `impossibility` holds the paper's negative results."""
