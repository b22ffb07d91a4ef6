"""After the table: export the chosen adapter (or the merged model) with a model card, and predict with it.

`export` picks a checkpoint - a training run's own choice (`selected.json`) or a sweep's DomainBed
selection - and writes it in Hugging Face format; `predict` runs batch inference over any folder of
images on Ray Data through the generation engines. Serving is vLLM's own server (docs/serving.md).
"""
