"""The product workflows above training and export: `bld demo` (train, export, sample and
score, reusing finished stages) and `bld evaluate` (score a digits bundle)."""
