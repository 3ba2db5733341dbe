"""Small helpers every layer may use and that use no other part of distgan: atomic files and hashes (files),
PNG grids (images), draws of random numbers every rank agrees on (draws), metrics collected across ranks (stats)."""
