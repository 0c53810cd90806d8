"""Model patches (HiDiffusion): plain functions and classes that patch a cloned ModelPatcher."""
