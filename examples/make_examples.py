"""Regenerate the bundled example recordings with eSpeak NG (run once; the outputs are committed).

python examples/make_examples.py
"""

from pathlib import Path

from generalist_cli.media.audio import encode_audio
from generalist_cli.media.espeak import synthesize_16k

HERE = Path(__file__).parent
EXAMPLES = {
    "hello.m4a": (
        "Hello, and welcome. This voice was made by a computer, and the model turns it back into text.",
        "en-us",
        140,
    ),
}

if __name__ == "__main__":
    for name, (text, voice, rate) in EXAMPLES.items():
        encode_audio(HERE / name, synthesize_16k(text, voice=voice, rate=rate), bitrate=48_000)
        (HERE / name).with_suffix(".txt").write_text(text + "\n")
        print(HERE / name)
