"""Victim and surrogate models. One file per architecture; `conf/model/<name>.yaml` builds it."""
