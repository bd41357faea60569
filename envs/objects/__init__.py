"""The objects of a game's stored frames, extracted from the live env the frames were played in: collect.annotate
replays each episode and asks the game's extractor after every decision.

An extractor is one module per game (envs/objects/<game>.py), registered in EXTRACTORS under the game's name.
`Extractor(env)` is made after each reset of the replayed env (the gymnasium env whose observations are the stored
frames); `extractor(frame)` is called with every stored frame while the env is in the state that produced it, and
returns the frame's objects (label, mask, alien row), the counts its pixel checks add up and whether the frame
fails them badly (envs.objects.base.FrameObjects).
"""

from core.registry import Registry

EXTRACTORS = Registry("object extractor", "envs.objects")
