"""The local model store and the sources models are pulled from (hub, HF dir, CTranslate2 dir, weights packages)."""
