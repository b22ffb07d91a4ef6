"""DomainBed-Reasoning generation: teacher chains for every image, validated, sharded, resumable."""
