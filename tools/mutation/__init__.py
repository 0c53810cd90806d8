"""Test strength: hand-made mutants and the mutmut run over patches/ and samplers/ (docs/tests.md)."""
