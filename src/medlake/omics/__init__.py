"""Omics analyses: genome-wide association (``omics.gwas``) and differential expression
(``omics.expression``), on files registered in the lake or given on the command line."""
