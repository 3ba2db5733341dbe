"""Small helpers every layer may use and that use no other part of distgan: atomic files and hashes (files), PNG
grids (grids), random draws every rank agrees on (draws), metrics across ranks (stats), available memory (host)."""
