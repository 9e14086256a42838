"""The random streams a run draws from besides the global one, each seeded `seed + offset`.

Why own streams: a draw taken from the global RNG between seeding and the end of a phase
changes everything after it (the next model's initialisation, a shuffle), so each thing that
needs randomness beyond training gets a generator of its own, seeded from the run's seed: the
same seed gives the same draws on a resume or a repeat, and two streams never share draws.
Why these numbers: the offsets only have to keep the streams of one seed apart and of
nearby seeds (a sweep's 0, 1, 2, ...) apart too; the per-round ones step by a large prime
(`seed + step * k`), so round k of seed s never meets round k' of seed s' in a sweep's range.
The values are the ones every measured number in docs/ was run with: changing one changes
the runs.
"""

from __future__ import annotations

LOADER = 1000  # the training loader's shuffle order (a phase's own loader: + its offset j)
SURROGATE_SPLIT = 7  # adv: which training images the black-box attacker's surrogate gets
ATTACK = 4242  # adv: the random starts of the evaluation attacks (PGD), off the global RNG
PRUNE_ROUND = 7919  # prune: round k's random filters / random blocks: seed + PRUNE_ROUND * k
RANDOM_BLOCKS = 104729  # prune: the j-th random-block baseline: seed + RANDOM_BLOCKS * j
