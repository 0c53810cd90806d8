"""Samplers and guiders (MegaFusion relay, autoguidance) built on comfy.samplers."""
