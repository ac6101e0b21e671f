"""Decode and encode media with PyAV. Pure functions: a path in, arrays out (and back)."""

from generalist_cli.media.audio import SAMPLE_RATE, decode_audio, encode_audio, is_silent

__all__ = ["SAMPLE_RATE", "decode_audio", "encode_audio", "is_silent"]
