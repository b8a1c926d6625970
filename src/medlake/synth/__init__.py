"""The synthetic hospital: clinical sources, omics files and the truth they were drawn from."""
