"""Synthesize a deterministic, genre-like demo dataset in the GTZAN layout.

``make_demo`` writes ``<out_dir>/<label>/<label>.<artist:02d>.<clip:03d>.wav`` (16-bit PCM) for a few
made-up "genres" built from simple synthesis: drum hits on class-specific patterns, bass lines,
chords from class-specific harmony, a handful of timbres (sine, saw, square/pulse, FM, organ,
Karplus-Strong pluck), noise beds, reverb and distortion.

The dataset is meant to exercise the pipeline, not to be trivially separable:

- every class draws tempo, key, mix levels, noise level, drum pattern and instruments at random,
  from ranges and sets that overlap with other classes (saw and pluck appear in several classes,
  power chords in two, swing in three, ...);
- each class has ``n_artists`` "artists"; an artist fixes a sub-style (tempo sub-range, key,
  instruments, swing, brightness, reverb, drive) that its clips share, so a split that ignores the
  artist group is optimistic, as with real music. The group is recoverable from the clip id with
  ``ID_PATTERN``.

Randomness comes from ``np.random.default_rng`` seeded with ``(seed, class index, artist[, clip])``:
the same arguments give byte-identical files, and asking for more clips per class only adds files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import signal

from soundstage.io import atomic_path

__all__ = ["CLASS_NAMES", "ID_PATTERN", "make_demo"]

#: Regular expression a demo clip id matches; ``group`` is the artist within the class.
ID_PATTERN = r"^(?P<label>[a-z_]+)\.(?P<group>\d{2})\.\d{3}$"

# Chord qualities as semitones above the chord root.
_CHORDS: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "pow": (0, 7, 12),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "add9": (0, 4, 7, 14),
    "dom7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "min9": (0, 3, 10, 14),
    "dom9": (0, 4, 10, 14),
}

# Scales (modes) as semitones above the key; used by melodies and walking bass lines.
_SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "blues": (0, 3, 5, 6, 7, 10),
    "penta": (0, 2, 4, 7, 9),
}

Progression = tuple[tuple[int, str], ...]  # (chord root in semitones above the key, quality)


def _progressions(*specs: str) -> tuple[Progression, ...]:
    """Parse chord progressions written as ``"2:min7 7:dom7 0:maj7"`` (root above the key: quality)."""
    out = []
    for spec in specs:
        chords = tuple((int(root), quality) for root, quality in (c.split(":") for c in spec.split()))
        if not chords or any(q not in _CHORDS for _, q in chords):
            raise ValueError(f"bad progression {spec!r}")
        out.append(chords)
    return tuple(out)


@dataclass(frozen=True)
class _Genre:
    """What a class may draw from. Ranges are ``(low, high)``; tuples of names are choices."""

    name: str
    tempo: tuple[float, float]  # BPM, deliberately overlapping between classes
    scales: tuple[str, ...]
    progressions: tuple[Progression, ...]
    bars_per_chord: tuple[int, ...]
    chord_styles: tuple[str, ...]  # pad | strum | stab | arp | chug | comp
    chord_insts: tuple[str, ...]
    chord_register: tuple[int, int]  # MIDI note range of chord roots
    bass_styles: tuple[str, ...]  # root | walk | octave | offbeat | pedal | follow | none
    bass_insts: tuple[str, ...]
    lead_insts: tuple[str, ...]
    lead_prob: float
    lead_density: tuple[float, float]  # probability that a lead note starts on a step
    kits: tuple[str, ...]
    drum_prob: float
    kick: tuple[str, ...]  # 16-step patterns: X accent, x normal, o ghost, . rest
    snare: tuple[str, ...]
    hat: tuple[str, ...]
    swing: tuple[float, float]  # delay of the off-beat eighth, in sixteenths (0.67 = triplet)
    jitter: tuple[float, float]  # timing humanization, seconds (standard deviation)
    drive: tuple[float, float]  # tanh distortion gain on chords (1 = clean)
    reverb: tuple[float, float]  # wet fraction
    decay: tuple[float, float]  # reverb RT60, seconds
    noise: tuple[float, float]  # noise bed level relative to the music
    noise_colors: tuple[str, ...]  # white | pink | brown | crackle
    brightness: tuple[float, float]  # low-pass cut-off of the chord/lead bus, Hz
    crush_prob: float = 0.0  # probability of a bit-crushed (few-bit) master
    bass_low: int = 33  # lowest MIDI note of the bass (33 = A1)


_ROCK_KICK = "x.....x.x......."
_BACKBEAT = "....x.......x..."
_EIGHTHS = "x.x.x.x.x.x.x.x."
_FOUR = "x...x...x...x..."

_GENRES: tuple[_Genre, ...] = (
    _Genre(
        name="ambient", tempo=(60, 105), scales=("lydian", "major", "dorian"),
        progressions=_progressions("0:maj7 5:maj7", "0:sus2 7:sus4 9:min7 5:maj7", "0:add9 4:min7", "0:min9 5:min7"),
        bars_per_chord=(1, 2), chord_styles=("pad", "pad", "arp"), chord_insts=("pad", "fm", "sine", "organ"),
        chord_register=(52, 64), bass_styles=("pedal", "none", "root"), bass_insts=("sine", "fm"),
        lead_insts=("fm", "sine", "pluck"), lead_prob=0.4, lead_density=(0.05, 0.15),
        kits=("soft", "electronic"), drum_prob=0.3, kick=("x.......x.......", _FOUR), snare=("." * 16, _BACKBEAT),
        hat=("..x...x...x...x.", "." * 16), swing=(0.0, 0.2), jitter=(0.0, 0.01), drive=(1.0, 1.5),
        reverb=(0.45, 0.75), decay=(2.0, 4.0), noise=(0.02, 0.12), noise_colors=("pink", "brown", "white"),
        brightness=(1200, 4500)),
    _Genre(
        name="blues_like", tempo=(70, 128), scales=("blues", "mixolydian"),
        progressions=_progressions("0:dom7 5:dom7 0:dom7 7:dom7", "0:dom7 0:dom7 5:dom7 0:dom7",
                                   "0:dom9 5:dom7 7:dom7 5:dom9"),
        bars_per_chord=(1, 2), chord_styles=("strum", "strum", "chug"), chord_insts=("pluck", "organ", "saw"),
        chord_register=(45, 57), bass_styles=("walk", "root", "follow"), bass_insts=("pluck", "sine", "saw"),
        lead_insts=("saw", "organ", "pluck", "square"), lead_prob=0.6, lead_density=(0.15, 0.35),
        kits=("acoustic", "brush"), drum_prob=0.85, kick=(_ROCK_KICK, "x.......x.x....."), snare=(_BACKBEAT,),
        hat=(_EIGHTHS, "x...x.x.x...x.x."), swing=(0.3, 0.67), jitter=(0.004, 0.012), drive=(1.5, 5.0),
        reverb=(0.1, 0.35), decay=(0.6, 1.6), noise=(0.01, 0.08), noise_colors=("crackle", "pink", "white"),
        brightness=(2500, 7000)),
    _Genre(
        name="techno", tempo=(118, 142), scales=("minor", "phrygian", "dorian"),
        progressions=_progressions("0:min", "0:min 8:maj", "0:min7 5:min7", "0:sus4 0:min"),
        bars_per_chord=(1, 2), chord_styles=("stab", "pad", "arp"), chord_insts=("saw", "square", "pad", "fm"),
        chord_register=(50, 62), bass_styles=("offbeat", "octave", "root"), bass_insts=("saw", "square", "sine"),
        lead_insts=("square", "saw", "fm"), lead_prob=0.25, lead_density=(0.1, 0.3),
        kits=("electronic",), drum_prob=0.95, kick=(_FOUR, _FOUR, "x...x...x...x.x."),
        snare=(_BACKBEAT, "." * 16, "....x..x....x..."),
        hat=("..x...x...x...x.", "xxxxxxxxxxxxxxxx", "x.xxx.xxx.xxx.xx"), swing=(0.0, 0.15),
        jitter=(0.0, 0.002), drive=(1.0, 3.0), reverb=(0.1, 0.4), decay=(0.5, 2.0), noise=(0.0, 0.05),
        noise_colors=("white", "pink"), brightness=(1000, 7000)),
    _Genre(
        name="folk", tempo=(78, 132), scales=("major", "mixolydian", "penta"),
        progressions=_progressions("0:maj 5:maj 7:maj 0:maj", "0:maj 7:maj 9:min 5:maj", "0:maj 5:maj 0:sus4 7:maj",
                                   "9:min 5:maj 0:maj 7:maj"),
        bars_per_chord=(1, 2), chord_styles=("strum", "strum", "arp"), chord_insts=("pluck", "pluck", "organ", "sine"),
        chord_register=(48, 60), bass_styles=("root", "none", "walk"), bass_insts=("pluck", "sine"),
        lead_insts=("sine", "pluck", "square", "fm"), lead_prob=0.55, lead_density=(0.15, 0.35),
        kits=("brush", "acoustic", "soft"), drum_prob=0.45, kick=("x.......x.......", _ROCK_KICK),
        snare=(_BACKBEAT, "." * 16), hat=("." * 16, _EIGHTHS), swing=(0.0, 0.35), jitter=(0.004, 0.015),
        drive=(1.0, 1.3), reverb=(0.15, 0.45), decay=(0.8, 2.0), noise=(0.01, 0.06),
        noise_colors=("pink", "crackle", "white"), brightness=(2500, 6500)),
    _Genre(
        name="metalish", tempo=(95, 175), scales=("phrygian", "minor"),
        progressions=_progressions("0:pow 1:pow 0:pow 3:pow", "0:pow 5:pow 3:pow 8:pow", "0:pow 0:pow 6:pow 5:pow",
                                   "0:min 8:pow 10:pow 0:pow"),
        bars_per_chord=(1,), chord_styles=("chug", "chug", "strum"), chord_insts=("saw", "square", "pluck"),
        chord_register=(38, 47), bass_styles=("follow", "root"), bass_insts=("saw", "square"),
        lead_insts=("saw", "square"), lead_prob=0.3, lead_density=(0.2, 0.5),
        kits=("acoustic", "electronic"), drum_prob=0.95,
        kick=("xxxxxxxxxxxxxxxx", "x.x.x.x.x.x.x.x.", "x..x..x.x..x...."),
        snare=(_BACKBEAT, "..x...x...x...x."), hat=(_EIGHTHS, "x...x...x...x..."), swing=(0.0, 0.1),
        jitter=(0.002, 0.008), drive=(6.0, 25.0), reverb=(0.08, 0.3), decay=(0.6, 1.8), noise=(0.02, 0.1),
        noise_colors=("white", "pink"), brightness=(3000, 8000), bass_low=28),
    _Genre(
        name="chiptune", tempo=(105, 165), scales=("major", "minor", "penta"),
        progressions=_progressions("0:maj 7:maj 9:min 5:maj", "9:min 5:maj 0:maj 7:maj", "0:min 8:maj 10:maj 0:min",
                                   "0:maj 5:maj 7:dom7 0:maj"),
        bars_per_chord=(1,), chord_styles=("arp", "arp", "stab"), chord_insts=("pulse", "square", "tri"),
        chord_register=(55, 67), bass_styles=("octave", "root", "walk"), bass_insts=("tri", "square", "pulse"),
        lead_insts=("pulse", "square", "tri"), lead_prob=0.75, lead_density=(0.25, 0.55),
        kits=("chip", "electronic"), drum_prob=0.8, kick=(_FOUR, _ROCK_KICK), snare=(_BACKBEAT, "....x..x....x..."),
        hat=(_EIGHTHS, "xxxxxxxxxxxxxxxx"), swing=(0.0, 0.25), jitter=(0.0, 0.0), drive=(1.0, 1.5),
        reverb=(0.0, 0.12), decay=(0.3, 0.8), noise=(0.0, 0.03), noise_colors=("white",),
        brightness=(5000, 11000), crush_prob=0.6),
    _Genre(
        name="jazzish", tempo=(85, 172), scales=("dorian", "major", "mixolydian"),
        progressions=_progressions("2:min7 7:dom7 0:maj7 9:min7", "0:maj7 9:min7 2:min7 7:dom9",
                                   "2:min9 7:dom9 0:maj7 0:maj7", "0:min7 5:dom7 10:maj7 3:maj7"),
        bars_per_chord=(1,), chord_styles=("comp", "comp", "pad"), chord_insts=("fm", "organ", "sine", "pluck"),
        chord_register=(50, 60), bass_styles=("walk", "walk", "root"), bass_insts=("sine", "pluck"),
        lead_insts=("fm", "saw", "sine", "organ"), lead_prob=0.6, lead_density=(0.2, 0.45),
        kits=("brush", "acoustic", "soft"), drum_prob=0.9, kick=("x..........x....", "x......." * 2),
        snare=("..o....o.o....o.", "......o.....o..o", _BACKBEAT), hat=("x...x.x.x...x.x.", "x...x.xxx...x.xx"),
        swing=(0.35, 0.67), jitter=(0.004, 0.012), drive=(1.0, 1.4), reverb=(0.15, 0.4), decay=(0.8, 2.0),
        noise=(0.01, 0.06), noise_colors=("crackle", "pink", "brown"), brightness=(1800, 5000)),
    _Genre(
        name="noise_rock", tempo=(90, 160), scales=("minor", "phrygian", "blues"),
        progressions=_progressions("0:pow 10:pow 5:pow 3:pow", "0:min 3:maj 10:pow 5:min", "0:pow 1:pow 6:pow 0:pow",
                                   "0:dom7 5:pow 0:pow 7:pow"),
        bars_per_chord=(1, 2), chord_styles=("strum", "chug", "pad"), chord_insts=("saw", "square", "pluck", "organ"),
        chord_register=(40, 55), bass_styles=("follow", "root", "pedal"), bass_insts=("saw", "square", "pluck"),
        lead_insts=("saw", "square", "fm"), lead_prob=0.3, lead_density=(0.1, 0.4),
        kits=("acoustic", "electronic"), drum_prob=0.85, kick=(_ROCK_KICK, "x.x.....x.x.....", _FOUR),
        snare=(_BACKBEAT, "....x..x....x.x."), hat=(_EIGHTHS, "xxxxxxxxxxxxxxxx", "x...x...x...x..."),
        swing=(0.0, 0.3), jitter=(0.003, 0.015), drive=(3.0, 15.0), reverb=(0.15, 0.5), decay=(0.8, 2.5),
        noise=(0.08, 0.4), noise_colors=("white", "pink", "brown"), brightness=(2500, 9000)),
)

#: The class labels ``make_demo`` can write, in the order ``n_classes`` takes them.
CLASS_NAMES: tuple[str, ...] = tuple(g.name for g in _GENRES)

# Seed-stream tags, so the artist stream and a clip stream never coincide.
_ARTIST_STREAM = 0
_CLIP_STREAM = 1


def make_demo(*, out_dir: Path, n_classes: int = 8, clips_per_class: int = 24, n_artists: int = 4,
              duration: float = 6.0, sample_rate: int = 22050, seed: int = 42) -> pd.DataFrame:
    """Write a synthetic, genre-like dataset in the GTZAN layout.

    The arguments are ``params.yaml: demo`` and ``seed``, in the ranges
    :func:`soundstage.config.validate_params` checks; they are not checked again here.

    Parameters
    ----------
    out_dir : Path
        Root folder; clips go to ``out_dir/<label>/<id>.wav``. Created when missing. Existing clips
        with the same ids are overwritten; other files are left alone.
    n_classes : int
        Number of classes, the first ``n_classes`` of ``CLASS_NAMES`` (2 to ``len(CLASS_NAMES)``).
    clips_per_class : int
        Clips per class (1 to 1000 per artist). Clip ``k`` belongs to artist ``k % n_artists``, so
        each artist gets an equal share (give or take one), and a larger value only adds clips.
    n_artists : int
        Artists (groups) per class, 1 to 99. An artist fixes a sub-style shared by its clips.
    duration : float
        Length of each clip in seconds (> 0).
    sample_rate : int
        Sampling rate in Hz, 8000 to 192000.
    seed : int
        Seed of every random choice; the same arguments give byte-identical files.

    Returns
    -------
    pandas.DataFrame
        One row per written file, columns ``id, path, label, group``: ``id`` is
        ``<label>.<artist:02d>.<clip:03d>`` (it matches ``ID_PATTERN``), ``path`` the absolute path
        of the WAV file, ``group`` the two-digit artist number.
    """
    out_dir = Path(out_dir).resolve()
    n_samples = max(1, int(round(duration * sample_rate)))
    rows = []
    for class_index, genre in enumerate(_GENRES[:n_classes]):
        artists = [_make_artist(genre, np.random.default_rng([seed, _ARTIST_STREAM, class_index, a]))
                   for a in range(n_artists)]
        for k in range(clips_per_class):
            artist, clip = k % n_artists, k // n_artists
            rng = np.random.default_rng([seed, _CLIP_STREAM, class_index, artist, clip])
            y = _render_clip(genre, artists[artist], rng, n_samples=n_samples, sr=sample_rate)
            clip_id = f"{genre.name}.{artist:02d}.{clip:03d}"
            path = out_dir / genre.name / f"{clip_id}.wav"
            with atomic_path(path) as tmp:
                sf.write(tmp, y, sample_rate, subtype="PCM_16", format="WAV")
            rows.append({"id": clip_id, "path": str(path), "label": genre.name, "group": f"{artist:02d}"})
    return pd.DataFrame(rows, columns=["id", "path", "label", "group"])


# ----------------------------------------------------------------------------------------------
# Artist and clip choices
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Artist:
    """The sub-style an artist keeps across its clips."""

    tempo: float  # preferred BPM
    key: int  # pitch class of the preferred key
    scale: str
    progression: int
    bars_per_chord: int
    chord_style: str
    chord_inst: str
    bass_style: str
    bass_inst: str
    lead_inst: str
    kit: str
    patterns: tuple[int, int, int]  # kick, snare, hat pattern indices
    swing: float
    drive: float
    reverb: float
    decay: float
    brightness: float
    noise: float
    noise_color: str


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _make_artist(genre: _Genre, rng: np.random.Generator) -> _Artist:
    return _Artist(
        tempo=_uniform(rng, genre.tempo), key=int(rng.integers(12)), scale=_pick(rng, genre.scales),
        progression=int(rng.integers(len(genre.progressions))),
        bars_per_chord=int(genre.bars_per_chord[int(rng.integers(len(genre.bars_per_chord)))]),
        chord_style=_pick(rng, genre.chord_styles), chord_inst=_pick(rng, genre.chord_insts),
        bass_style=_pick(rng, genre.bass_styles), bass_inst=_pick(rng, genre.bass_insts),
        lead_inst=_pick(rng, genre.lead_insts), kit=_pick(rng, genre.kits),
        patterns=(int(rng.integers(len(genre.kick))), int(rng.integers(len(genre.snare))),
                  int(rng.integers(len(genre.hat)))),
        swing=_uniform(rng, genre.swing), drive=_uniform(rng, genre.drive), reverb=_uniform(rng, genre.reverb),
        decay=_uniform(rng, genre.decay), brightness=_uniform(rng, genre.brightness),
        noise=_uniform(rng, genre.noise), noise_color=_pick(rng, genre.noise_colors))


def _keep_or_pick(rng: np.random.Generator, keep_prob: float, preferred: str, options: Sequence[str]) -> str:
    return preferred if rng.random() < keep_prob else _pick(rng, options)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

@dataclass
class _Grid:
    """Sixteenth-note grid of one clip: step ``k`` sounds at ``times[k]`` seconds."""

    times: np.ndarray  # shape (n_steps,), seconds; may be negative for steps before the clip start
    first: int  # song position (in steps) of ``times[0]``
    step: float  # seconds per sixteenth

    def sample(self, k: int, sr: int) -> int:
        return int(round(self.times[k] * sr))


def _render_clip(genre: _Genre, artist: _Artist, rng: np.random.Generator, *, n_samples: int,
                 sr: int) -> np.ndarray:
    """Render one clip, shape ``(n_samples,)``, float64, peak around -3 dBFS."""
    lo, hi = genre.tempo
    tempo = float(np.clip(artist.tempo * math.exp(rng.normal(0.0, 0.05)), lo, hi))
    key = artist.key if rng.random() < 0.6 else int(rng.integers(12))
    scale = _SCALES[_keep_or_pick(rng, 0.8, artist.scale, genre.scales)]
    progression = genre.progressions[artist.progression if rng.random() < 0.7
                                     else int(rng.integers(len(genre.progressions)))]
    chord_style = _keep_or_pick(rng, 0.75, artist.chord_style, genre.chord_styles)
    chord_inst = _keep_or_pick(rng, 0.75, artist.chord_inst, genre.chord_insts)
    bass_style = _keep_or_pick(rng, 0.75, artist.bass_style, genre.bass_styles)
    bass_inst = _keep_or_pick(rng, 0.75, artist.bass_inst, genre.bass_insts)
    lead_inst = _keep_or_pick(rng, 0.75, artist.lead_inst, genre.lead_insts)

    # A clip is an excerpt of a longer song: it starts at a random sixteenth of the progression,
    # a fraction of a sixteenth before that step, with 8th/16th swing and humanized timing.
    step = 60.0 / tempo / 4.0
    duration = n_samples / sr
    n_steps = int(math.ceil(duration / step)) + 2
    first = int(rng.integers(16 * len(progression) * artist.bars_per_chord))
    k = np.arange(n_steps)
    pos = (first + k) % 4
    swing = float(np.clip(artist.swing + rng.normal(0.0, 0.05), 0.0, 0.7))
    times = (k - rng.uniform(0.0, 1.0)) * step + swing * step * np.select([pos == 2, pos % 2 == 1], [1.0, 0.5], 0.0)
    times += rng.normal(0.0, _uniform(rng, genre.jitter), n_steps)
    grid = _Grid(times=times, first=first, step=step)

    cache: dict[tuple[str, int, int], np.ndarray] = {}

    def chord_at(j: int) -> tuple[int, tuple[int, ...]]:
        bar = (grid.first + j) // 16
        root, quality = progression[(bar // artist.bars_per_chord) % len(progression)]
        return root, _CHORDS[quality]

    reg_lo, reg_hi = genre.chord_register
    chord_base = reg_lo + (key - reg_lo) % 12
    if chord_base > reg_hi:
        chord_base -= 12

    # Chords (+ lead) go through drive and a low-pass; bass and drums stay clean.
    tonal = np.zeros(n_samples)
    _render_chords(tonal, grid, chord_at, chord_style, chord_inst, chord_base, rng, sr, cache)
    if rng.random() < genre.lead_prob:
        lead = np.zeros(n_samples)
        _render_lead(lead, grid, key, scale, lead_inst, _uniform(rng, genre.lead_density), rng, sr, cache)
        tonal += lead * rng.uniform(0.5, 1.0)
    drive = artist.drive * rng.uniform(0.8, 1.25)
    if drive > 1.05:
        tonal = np.tanh(drive * tonal / (np.max(np.abs(tonal)) + 1e-9)) / math.tanh(drive)
    cutoff = artist.brightness * rng.uniform(0.75, 1.33)
    tonal = _lowpass(tonal, cutoff, sr)

    bass = np.zeros(n_samples)
    _render_bass(bass, grid, chord_at, bass_style, bass_inst, key, scale, chord_style, rng, sr, cache,
                 low=genre.bass_low)
    bass = _lowpass(bass, rng.uniform(400.0, 1500.0), sr)

    drums = np.zeros(n_samples)
    if rng.random() < genre.drum_prob:
        kit = _keep_or_pick(rng, 0.8, artist.kit, genre.kits)
        patterns = tuple(_keep_or_pick(rng, 0.7, options[i], options)
                         for i, options in zip(artist.patterns, (genre.kick, genre.snare, genre.hat), strict=True))
        _render_drums(drums, grid, kit, patterns, rng, sr)

    mix = (_normalized(tonal) * rng.uniform(0.5, 1.0) + _normalized(bass) * rng.uniform(0.3, 0.8)
           + _normalized(drums) * rng.uniform(0.4, 1.0))
    wet = float(np.clip(artist.reverb + rng.normal(0.0, 0.05), 0.0, 0.9))
    if wet > 0.01:
        mix = (1.0 - wet) * mix + wet * _reverb(mix, artist.decay * rng.uniform(0.8, 1.25), rng, sr)

    color = _keep_or_pick(rng, 0.7, artist.noise_color, genre.noise_colors)
    level = artist.noise * rng.uniform(0.5, 1.6) * math.sqrt(_power(mix) + 1e-12)
    mix = mix + level * _noise(color, n_samples, rng, sr)

    if rng.random() < genre.crush_prob:
        levels = 2.0 ** int(rng.integers(3, 7))
        mix = np.round(mix / (np.max(np.abs(mix)) + 1e-12) * levels) / levels
    mix = signal.sosfilt(signal.butter(2, min(30.0, 0.2 * sr), "highpass", fs=sr, output="sos"), mix)

    # Peak around -3 dBFS, a few dB either way, never above -1 dBFS.
    peak = float(np.max(np.abs(mix)))
    if peak <= 0.0 or not math.isfinite(peak):
        return np.zeros(n_samples)
    return mix * (10.0 ** ((-3.0 + rng.uniform(-2.5, 2.0)) / 20.0) / peak)


def _power(x: np.ndarray) -> float:
    """Mean square. ``np.dot`` would be faster but may wake BLAS threads on a shared machine."""
    return float(np.einsum("i,i->", x, x)) / max(1, len(x))


def _normalized(x: np.ndarray) -> np.ndarray:
    rms = math.sqrt(_power(x))
    return x / rms if rms > 1e-12 else x


def _lowpass(x: np.ndarray, cutoff: float, sr: int) -> np.ndarray:
    if cutoff >= 0.45 * sr:
        return x
    return signal.sosfilt(signal.butter(2, cutoff, "lowpass", fs=sr, output="sos"), x)


def _add(buf: np.ndarray, start: int, x: np.ndarray, gain: float) -> None:
    """Mix ``x`` into ``buf`` from sample ``start``; parts outside ``buf`` are dropped."""
    if start < 0:
        x, start = x[-start:], 0
    end = min(len(buf), start + len(x))
    if end > start:
        buf[start:end] += gain * x[:end - start]


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


# Envelope of each instrument: attack (s), decay (s), sustain level.
_ENVELOPES: dict[str, tuple[float, float, float]] = {
    "sine": (0.01, 0.4, 0.6), "saw": (0.005, 0.3, 0.7), "square": (0.005, 0.2, 0.7), "pulse": (0.002, 0.1, 0.8),
    "tri": (0.002, 0.1, 0.9), "fm": (0.002, 0.5, 0.3), "organ": (0.01, 0.1, 0.9), "pad": (0.35, 1.0, 0.8),
    "pluck": (0.0, 1.0, 1.0),
}


def _tone(inst: str, note: int, n: int, sr: int, rng: np.random.Generator,
          cache: dict[tuple[str, int, int], np.ndarray]) -> np.ndarray:
    """One note, shape ``(n,)``, peak about 1; cached per clip by ``(inst, note, n)``."""
    hit = cache.get((inst, note, n))
    if hit is not None:
        return hit
    f = _midi_hz(note)
    t = np.arange(n) / sr
    if inst == "pluck":
        y = _karplus_strong(f, n, sr, rng)
    else:
        phase = f * t
        if inst == "sine":
            y = np.sin(2 * np.pi * phase) + 0.15 * np.sin(4 * np.pi * phase)
        elif inst == "saw":  # two slightly detuned naive saws; aliasing is part of the sound here
            y = (2.0 * (phase % 1.0) - 1.0) + (2.0 * ((phase * 1.006 + 0.3) % 1.0) - 1.0)
        elif inst == "pad":
            y = sum(2.0 * ((phase * d + o) % 1.0) - 1.0 for d, o in ((0.995, 0.0), (1.0, 0.4), (1.005, 0.7)))
            y = _lowpass(np.asarray(y), min(4 * f, 3000.0), sr)
        elif inst == "square":
            y = np.where(phase % 1.0 < 0.5, 1.0, -1.0)
        elif inst == "pulse":
            y = np.where(phase % 1.0 < 0.25, 1.0, -1.0)
        elif inst == "tri":
            y = 4.0 * np.abs(phase % 1.0 - 0.5) - 1.0
        elif inst == "fm":  # electric-piano-like: the modulation index decays faster than the tone
            y = np.sin(2 * np.pi * phase + 2.5 * np.exp(-t / 0.15) * np.sin(2 * np.pi * phase))
        elif inst == "organ":
            y = sum(a * np.sin(2 * np.pi * h * phase) for h, a in ((1, 1.0), (2, 0.6), (3, 0.4), (4, 0.25), (6, 0.15)))
        else:
            raise ValueError(f"unknown instrument {inst!r}")
        attack, decay, sustain = _ENVELOPES[inst]
        env = (sustain + (1.0 - sustain) * np.exp(-t / decay))
        if attack > 0:
            env *= 1.0 - np.exp(-t / attack)
        y = np.asarray(y) * env
    fade = min(n, int(0.015 * sr))
    y = np.asarray(y, dtype=np.float64)
    if fade > 0:
        y[n - fade:] *= np.linspace(1.0, 0.0, fade)
    y /= np.max(np.abs(y)) + 1e-12
    cache[(inst, note, n)] = y
    return y


def _karplus_strong(f: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Plucked string: a noise burst recirculated through a two-point average, one period at a time."""
    period = max(2, int(round(sr / f)))
    n_periods = -(-n // period)
    loss = math.exp(-period / (sr * 1.2))  # overall decay, time constant ~1.2 s
    block = rng.uniform(-1.0, 1.0, period)
    out = np.empty(n_periods * period)
    for i in range(n_periods):
        out[i * period:(i + 1) * period] = block
        block = loss * 0.5 * (block + np.roll(block, 1))
    return out[:n]


def _voicing(base: int, root: int, intervals: tuple[int, ...]) -> list[int]:
    r = base + root % 12
    return [r + i for i in intervals]


def _render_chords(buf: np.ndarray, grid: _Grid, chord_at: Callable[[int], tuple[int, tuple[int, ...]]],
                   style: str, inst: str, base: int, rng: np.random.Generator, sr: int,
                   cache: dict[tuple[str, int, int], np.ndarray]) -> None:
    n_steps = len(grid.times)
    step_n = int(grid.step * sr)

    def play(j: int, notes: list[int], length_steps: float, vel: float, spread: float = 0.0) -> None:
        n = max(1, int(length_steps * step_n))
        start = grid.sample(j, sr)
        for i, note in enumerate(notes):
            _add(buf, start + int(i * spread * sr), _tone(inst, note, n, sr, rng, cache), vel / math.sqrt(len(notes)))

    if style == "pad":
        j = 0
        while j < n_steps:
            root, ivs = chord_at(j)
            run = 1
            while j + run < n_steps and chord_at(j + run) == (root, ivs):
                run += 1
            play(j, _voicing(base, root, ivs), run + 2, 0.8)
            j += run
    elif style == "strum":
        pattern = ("x...x...x...x...", "x..x..x.x.x.x...", "x.x.x.x.x.x.x.x.", "x.....x.x...x...")[int(rng.integers(4))]
        hits = [j for j in range(n_steps) if pattern[(grid.first + j) % 16] == "x"]
        spread = rng.uniform(0.008, 0.025)
        for a, j in enumerate(hits):
            root, ivs = chord_at(j)
            notes = _voicing(base, root, ivs)
            if a % 2:
                notes = notes[::-1]
            nxt = hits[a + 1] if a + 1 < len(hits) else j + 4
            play(j, notes, nxt - j + 1, rng.uniform(0.6, 1.0), spread)
    elif style == "stab":
        pattern = ("..x...x...x...x.", "x..x..x...x..x..", "x.....x...x.....")[int(rng.integers(3))]
        length = rng.uniform(0.6, 2.0)
        for j in range(n_steps):
            if pattern[(grid.first + j) % 16] == "x":
                root, ivs = chord_at(j)
                play(j, _voicing(base, root, ivs), length, rng.uniform(0.7, 1.0))
    elif style == "arp":
        rate = int(rng.choice([1, 2]))
        order = _pick(rng, ("up", "down", "updown"))
        for j in range(0, n_steps, rate):
            root, ivs = chord_at(j)
            notes = _voicing(base, root, ivs) + [n + 12 for n in _voicing(base, root, ivs)]
            if order == "down":
                notes = notes[::-1]
            elif order == "updown":
                notes = notes + notes[-2:0:-1]
            idx = ((grid.first + j) // rate) % len(notes)
            play(j, [notes[idx]], rate * 0.9, rng.uniform(0.6, 1.0))
    elif style == "chug":
        for j in range(n_steps):
            if (grid.first + j) % 2:
                continue
            root, ivs = chord_at(j)
            accent = (grid.first + j) % 8 == 0
            play(j, _voicing(base, root, (0, 7, 12)), 3.5 if accent else 1.0, 1.0 if accent else 0.7)
    elif style == "comp":
        for j in range(n_steps):
            if rng.random() < (0.35 if (grid.first + j) % 4 in (0, 3) else 0.12):
                root, ivs = chord_at(j)
                play(j, _voicing(base, root, ivs), rng.choice([1.0, 2.0, 3.0]), rng.uniform(0.4, 0.9), 0.004)
    else:
        raise ValueError(f"unknown chord style {style!r}")


def _render_bass(buf: np.ndarray, grid: _Grid, chord_at: Callable[[int], tuple[int, tuple[int, ...]]],
                 style: str, inst: str, key: int, scale: tuple[int, ...], chord_style: str,
                 rng: np.random.Generator, sr: int, cache: dict[tuple[str, int, int], np.ndarray], *,
                 low: int) -> None:
    if style == "none":
        return
    n_steps = len(grid.times)
    step_n = int(grid.step * sr)

    def play(j: int, note: int, length_steps: float, vel: float) -> None:
        _add(buf, grid.sample(j, sr), _tone(inst, note, max(1, int(length_steps * step_n)), sr, rng, cache), vel)

    def root_note(j: int) -> int:
        return low + (key + chord_at(j)[0] - low) % 12

    for j in range(n_steps):
        pos = (grid.first + j) % 16
        if style == "root" and pos in (0, 8):
            play(j, root_note(j) + (7 if pos == 8 and rng.random() < 0.4 else 0), 7, 0.9)
        elif style == "pedal" and (pos == 0 or j == 0):
            play(j, root_note(j), 16, 0.8)
        elif style == "octave" and pos % 2 == 0:
            play(j, root_note(j) + (12 if pos % 4 == 2 else 0), 1.5, 0.8)
        elif style == "offbeat" and pos % 4 == 2:
            play(j, root_note(j), 1.5, 0.9)
        elif style == "follow" and pos % 2 == 0 and (chord_style == "chug" or pos % 4 == 0 or rng.random() < 0.5):
            play(j, root_note(j), 1.8, 0.8)
        elif style == "walk" and pos % 4 == 0:
            # Quarter notes: the root on the downbeat, then scale tones wandering towards the next root.
            if pos == 0:
                note = root_note(j)
            else:
                degree = scale[int(rng.integers(len(scale)))]
                note = low + (key + degree - low) % 12 + (12 if rng.random() < 0.3 else 0)
            play(j, note, 3.8, 0.8)


def _render_lead(buf: np.ndarray, grid: _Grid, key: int, scale: tuple[int, ...], inst: str, density: float,
                 rng: np.random.Generator, sr: int, cache: dict[tuple[str, int, int], np.ndarray]) -> None:
    n_steps = len(grid.times)
    step_n = int(grid.step * sr)
    notes = [60 + key % 12 + o * 12 + d for o in (0, 1) for d in scale]
    idx = int(rng.integers(len(notes)))
    j = 0
    while j < n_steps:
        if rng.random() < density:
            length = int(rng.choice([1, 2, 2, 3, 4, 6]))
            idx = int(np.clip(idx + rng.integers(-2, 3), 0, len(notes) - 1))
            _add(buf, grid.sample(j, sr), _tone(inst, notes[idx], length * step_n, sr, rng, cache),
                 rng.uniform(0.6, 1.0))
            j += length
        else:
            j += 1


def _render_drums(buf: np.ndarray, grid: _Grid, kit: str, patterns: tuple[str, str, str],
                  rng: np.random.Generator, sr: int) -> None:
    sounds = _drum_kit(kit, rng, sr)
    velocity = {"X": 1.0, "x": 0.75, "o": 0.3}
    for sound, gain, pattern in zip(sounds, (1.0, 0.8, 0.35), patterns, strict=True):
        drop = rng.uniform(0.0, 0.15)  # a few missing hits and ghost notes make patterns less rigid
        for j in range(len(grid.times)):
            c = pattern[(grid.first + j) % 16]
            if c == "." and rng.random() < 0.03:
                c = "o"
            if c != "." and rng.random() >= drop:
                _add(buf, grid.sample(j, sr), sound, gain * velocity[c] * rng.uniform(0.8, 1.0))


def _drum_kit(kit: str, rng: np.random.Generator, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kick, snare and hat samples of one clip: a decaying sine sweep and filtered noise bursts."""
    nyq = 0.45 * sr
    # (kick start Hz, end Hz, decay s; snare band Hz, decay s; hat cut-off Hz, decay s)
    params = {
        "acoustic": (140.0, 55.0, 0.18, (800.0, 5000.0), 0.09, 6000.0, 0.05),
        "electronic": (180.0, 45.0, 0.30, (1200.0, 7000.0), 0.07, 8000.0, 0.03),
        "brush": (110.0, 60.0, 0.12, (1500.0, 8000.0), 0.16, 5000.0, 0.08),
        "soft": (100.0, 50.0, 0.25, (600.0, 3000.0), 0.10, 4000.0, 0.06),
        "chip": (220.0, 80.0, 0.08, (1000.0, 9000.0), 0.05, 9000.0, 0.02),
    }[kit]
    k0, k1, kdec, band, sdec, hcut, hdec = params
    jitter = rng.uniform(0.85, 1.15, 4)
    t = np.arange(int(0.6 * sr)) / sr
    freq = k1 * jitter[0] + (k0 - k1) * jitter[0] * np.exp(-t / 0.04)
    kick = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / (kdec * jitter[1]))

    ts = t[: int(0.4 * sr)]
    lo, hi = min(band[0], 0.3 * sr), min(band[1] * jitter[2], nyq)
    snare_noise = signal.sosfilt(signal.butter(2, [lo, hi], "bandpass", fs=sr, output="sos"),
                                 rng.standard_normal(len(ts)))
    snare = (snare_noise / (np.max(np.abs(snare_noise)) + 1e-12) + 0.5 * np.sin(2 * np.pi * 190 * ts)) \
        * np.exp(-ts / sdec)

    th = t[: int(0.25 * sr)]
    hat_noise = rng.standard_normal(len(th))
    if kit == "chip":  # sample-and-hold noise sounds like an 8-bit noise channel
        hat_noise = np.repeat(hat_noise[::4], 4)[: len(th)]
    hat_noise = signal.sosfilt(signal.butter(2, min(hcut * jitter[3], nyq), "highpass", fs=sr, output="sos"),
                               hat_noise)
    hat = hat_noise / (np.max(np.abs(hat_noise)) + 1e-12) * np.exp(-th / hdec)
    return kick, snare, hat


def _reverb(x: np.ndarray, rt60: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Wet signal of a noise-tail reverb (exponentially decaying noise impulse response)."""
    n = int(min(rt60, 4.0) * sr)
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir = _lowpass(ir, 5000.0, sr)
    ir[: int(0.01 * sr)] = 0.0  # pre-delay
    wet = signal.fftconvolve(x, ir)[: len(x)]
    return wet * math.sqrt(_power(x) / (_power(wet) + 1e-18))


def _noise(color: str, n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Noise bed with unit RMS: white, pink, brown or vinyl-like crackle."""
    white = rng.standard_normal(n)
    if color == "white":
        y = white
    elif color == "pink":  # Paul Kellet's economy pinking filter
        y = signal.lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786],
                           [1.0, -2.494956002, 2.017265875, -0.522189400], white)
    elif color == "brown":
        y = signal.lfilter([1.0], [1.0, -0.995], white)
    elif color == "crackle":
        clicks = (rng.random(n) < 30.0 / sr) * rng.standard_normal(n) * 8.0
        y = 0.3 * _lowpass(white, 3000.0, sr) + signal.lfilter([1.0], [1.0, -0.6], clicks)
    else:
        raise ValueError(f"unknown noise color {color!r}")
    return _normalized(np.asarray(y))
