"""Datasets: DomainBed specs, the folder reader (local or s3://), offline benchmarks and LODO splits."""
