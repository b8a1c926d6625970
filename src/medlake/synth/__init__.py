"""The synthetic hospital: clinical sources, omics files and the truth they were drawn from."""

from medlake.synth.hospital import SynthSummary, generate_hospital

__all__ = ["SynthSummary", "generate_hospital"]
