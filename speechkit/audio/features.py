"""The official Phi-4-multimodal log-mel front end (reference A.3-A.10), batched in torch.

Per utterance: frames of 400 samples every 160 (no centering, trailing partial window dropped),
pre-emphasis 0.97 *inside* each frame (the first sample's predecessor is itself), x32768,
symmetric Hamming window, rFFT 512, power, the SpeechLib 80-filter mel bank, ln with floor 1.0.
Natively 8 kHz audio takes the official "fill-zero" path: window 200, hop 80, rFFT 256, Nyquist
bin dropped and 129 zero bins appended, so the same 16 kHz bank sees nothing above 4 kHz.

Utterances are framed one by one (exactly the single-utterance features) and then transformed
together; the batch is right-padded with 0.0 in the log-mel domain, as the official processor does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from speechkit.audio.io import FILL_ZERO_RATE, SAMPLE_RATE
from speechkit.errors import AudioError

N_MELS = 80
N_FFT = 512
WIN_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms at 16 kHz
PREEMPHASIS = 0.97
INT16_SCALE = 32768.0  # the official code scales [-1, 1] floats to int16 magnitudes
MEL_FMAX = 7690.0
LOG_FLOOR = 1.0
FRAMES_PER_CHUNK = 512  # float64 frames processed at a time (2 MB): stays in cache
GPU_FRAMES_PER_CHUNK = 1 << 16  # on a GPU (256 MB of float64 frames): one FFT for a batch of clips


def _kaldi_mel(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def speechlib_mel_bank(
    n_mels: int = N_MELS,
    n_fft: int = N_FFT,
    sample_rate: int = SAMPLE_RATE,
    fmin: float = 0.0,
    fmax: float = MEL_FMAX,
) -> np.ndarray:
    """The SpeechLib "FbankFC" mel bank of the official extractor (reference A.6).

    Triangles are linear in Kaldi mel space (1127 ln(1 + f/700)); only FFT bins in
    [round(fmin*n_fft/sr) + 1, round(fmax*n_fft/sr)) are eligible (bins 1..245 for the
    released settings), which is where it differs from transformers' ``mel_filter_bank``.

    Returns:
        float32 array of shape (n_mels, n_fft // 2 + 1).
    """
    n_bins = n_fft // 2 + 1
    centers = np.linspace(0.0, _kaldi_mel(fmax), n_mels + 2)
    spacing = centers[1] - centers[0]
    # int(x + 0.5), not np.round: the official code rounds half up
    k_lo = int(fmin * n_fft / sample_rate + 0.5) + 1
    k_hi = int(fmax * n_fft / sample_rate + 0.5)
    bank = np.zeros((n_mels, n_bins), dtype=np.float64)
    bins = np.arange(k_lo, k_hi)
    mel = _kaldi_mel(bins * sample_rate / n_fft)
    for m in range(n_mels):
        inside = (centers[m] < mel) & (mel < centers[m + 2])
        bank[m, bins[inside]] = 1.0 - np.abs(centers[m + 1] - mel[inside]) / spacing
    return bank.astype(np.float32)


def num_frames(num_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Feature frames for a waveform of ``num_samples`` (100 frames/s at either rate)."""
    win, hop = _window_and_hop(sample_rate)
    if num_samples < win:
        return 0
    return (num_samples - win) // hop + 1


def num_audio_tokens(num_samples: int, sample_rate: int = SAMPLE_RATE, time_reduction: int = 8) -> int:
    """Audio tokens (encoder outputs, decoder placeholders) for ``num_samples``: ceil(frames / 8)."""
    return math.ceil(num_frames(num_samples, sample_rate) / time_reduction)


def _window_and_hop(sample_rate: int) -> tuple[int, int]:
    if sample_rate == SAMPLE_RATE:
        return WIN_LENGTH, HOP_LENGTH
    if sample_rate == FILL_ZERO_RATE:
        return WIN_LENGTH // 2, HOP_LENGTH // 2
    raise AudioError(
        f"the front end takes 16000 or 8000 Hz audio, got {sample_rate} Hz; load it with speechkit.audio.load_audio"
    )


def _fft_size(sample_rate: int) -> int:
    # same 31.25 Hz bin spacing at both rates
    return N_FFT if sample_rate == SAMPLE_RATE else N_FFT // 2


@dataclass(frozen=True)
class Features:
    """A padded batch of log-mel features.

    Attributes:
        values: (B, T_max, 80) float32 log-mel, right-padded with 0.0.
        lengths: (B,) int64 valid frames per item.
    """

    values: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device | str) -> Features:
        return Features(self.values.to(device, non_blocking=True), self.lengths.to(device))


def _power(spec: torch.Tensor) -> torch.Tensor:
    """(T, bins) float32 power of a fresh (T, bins) complex128 spectrum: re^2 + im^2 in float64, one rounding.

    On the CPU the spectrum is squared in place through numpy (two passes; torch's real/imag squares and
    sum make three temporaries: a sixth of a 30 s clip's front end).
    """
    if spec.device.type != "cpu":
        return (spec.real.square() + spec.imag.square()).to(torch.float32)
    parts = spec.numpy().view(np.float64)  # (T, 2 * bins): re, im, re, ...
    np.square(parts, out=parts)
    power = np.empty((parts.shape[0], parts.shape[1] // 2), dtype=np.float32)
    np.add(parts[:, 0::2], parts[:, 1::2], out=power, casting="same_kind")
    return torch.from_numpy(power)


class LogMelFrontend:
    """Batched official log-mel extractor; holds the mel bank and windows per device.

    Numerics follow the official code where it matters at the 1e-4 level: pre-emphasis and the
    x32768 scaling in float32, then window and FFT in float64 (low-energy bins are sensitive to
    the rounding of the float32 frames, so these must round exactly as the official frames do).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.bank = torch.from_numpy(speechlib_mel_bank()).T.contiguous().to(self.device)  # (257, 80)
        self.windows = {
            rate: torch.hamming_window(_window_and_hop(rate)[0], periodic=False, dtype=torch.float64).to(
                self.device
            )
            for rate in (SAMPLE_RATE, FILL_ZERO_RATE)
        }
        self._np_windows = {rate: window.cpu().numpy() for rate, window in self.windows.items()}

    def _window(self, frames: torch.Tensor, wave: torch.Tensor, emph: torch.Tensor, sample_rate: int) -> None:
        """Writes the windowed float64 frames of ``wave`` into ``frames`` (..., T, n_fft), whose tail stays zero.

        ``wave`` is (..., N) samples and ``emph`` its pre-emphasised stream from sample 1 on (..., N - 1);
        leading dimensions are items of a batch.
        """
        win, hop = _window_and_hop(sample_rate)
        window = self.windows[sample_rate]
        if emph.device.type == "cpu":
            # widened first (exact): a same-dtype product over the overlapping frames is cheaper than torch's
            # mixed-dtype one (30 s clip, one thread: 6.3 -> 5.7 ms for the whole front end)
            emph = emph.double()
        # float32 samples times the float64 window: the product rounds as the official float64 frames do
        torch.mul(emph.unfold(-1, win - 1, hop), window[1:], out=frames[..., 1:win])
        # the official filter restarts in every frame: the first sample's predecessor is itself
        starts = wave[..., : frames.shape[-2] * hop : hop]
        torch.mul((starts - PREEMPHASIS * starts) * INT16_SCALE, window[:1], out=frames[..., 0])

    def _logmel(self, frames: torch.Tensor, sample_rate: int, out: torch.Tensor | None = None) -> torch.Tensor:
        power = _power(torch.fft.rfft(frames, dim=-1))
        if sample_rate == FILL_ZERO_RATE:
            # drop the 4 kHz Nyquist bin, then zeros up to the 16 kHz bin count (reference A.8)
            power = torch.nn.functional.pad(power[:, :-1], (0, N_FFT // 2 + 1 - (power.shape[1] - 1)))
        return self._mel(power, out)

    def _mel(self, power: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """ln(max(power @ bank, 1)) of (T, 257) float32 power spectra."""
        return torch.mm(power, self.bank, out=out).clamp_(min=LOG_FLOOR).log_()

    def _short_cpu(self, wave: np.ndarray, sample_rate: int) -> torch.Tensor:
        """``utterance`` of a short float32 input on the CPU: the same steps with numpy's cheaper small ops.

        A 1 s clip is a hundred frames, where torch's per-op cost is a third of the time. The FFT and
        the matmul stay in torch: the long path's own (MKL on x86, a quarter faster than numpy's
        pocketfft at 98 frames); the two float64 FFTs differ at 1e-16, far below the float32 power.
        """
        win, hop = _window_and_hop(sample_rate)
        window = self._np_windows[sample_rate]
        n = (wave.size - win) // hop + 1
        # float32 pre-emphasis in place, one buffer (N - 1,): emph[i] is sample i + 1
        emph = np.multiply(wave[:-1], np.float32(PREEMPHASIS))
        np.subtract(wave[1:], emph, out=emph)
        emph *= np.float32(INT16_SCALE)
        frames = np.empty((n, _fft_size(sample_rate)))
        frames[:, win:] = 0.0
        # float32 samples times the float64 window (exact widening, one rounding), as the official frames; on
        # torch views of the samples widened first (numpy's mixed-dtype multiply over the overlapping frames took
        # ~1.5x as long at 1 s, torch's ~1.2x: a same-dtype product, and one widening pass per sample)
        strided = torch.from_numpy(emph).double().unfold(0, win - 1, hop)
        torch.mul(strided, self.windows[sample_rate][1:], out=torch.from_numpy(frames)[:, 1:win])
        # the official filter restarts in every frame: the first sample's predecessor is itself
        starts = wave[: n * hop : hop]
        first = np.multiply(starts, np.float32(PREEMPHASIS))
        np.subtract(starts, first, out=first)
        first *= np.float32(INT16_SCALE)
        np.multiply(first, window[0], out=frames[:, 0])
        return self._logmel(torch.from_numpy(frames), sample_rate)

    def utterance(self, wave: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """(T, 80) float32 log-mel of one mono waveform in [-1, 1] (16 kHz, or 8 kHz fill-zero)."""
        win, hop = _window_and_hop(sample_rate)
        if len(wave) < win:
            raise AudioError(
                f"audio of {len(wave)} samples at {sample_rate} Hz is shorter than one 25 ms window ({win} samples)"
            )
        n = (len(wave) - win) // hop + 1
        if self.device.type == "cpu" and n <= FRAMES_PER_CHUNK:
            # numpy input goes straight through: a torch round trip costs ~15 us, 5% of a 1 s clip
            wave = wave.detach().to("cpu", torch.float32).numpy() if isinstance(wave, torch.Tensor) else wave
            return self._short_cpu(np.asarray(wave, dtype=np.float32), sample_rate)
        wave = torch.as_tensor(wave, dtype=torch.float32, device=self.device)
        # pre-emphasis once on the stream (float32, rounding exactly as the official frames do); emph[i] is sample i + 1
        emph = (wave[1:] - PREEMPHASIS * wave[:-1]).mul_(INT16_SCALE)
        # one frame buffer per call, reused by every chunk: fresh megabytes per chunk cost page faults
        frames = torch.zeros(min(n, FRAMES_PER_CHUNK), _fft_size(sample_rate), dtype=torch.float64, device=self.device)
        if n <= FRAMES_PER_CHUNK:  # one chunk: no output buffer, no copy
            self._window(frames, wave, emph, sample_rate)
            return self._logmel(frames, sample_rate)
        out = torch.empty(n, N_MELS, device=self.device)
        # frames in cache-sized chunks: float64 frames of a long file would not fit in cache
        for first in range(0, n, FRAMES_PER_CHUNK):
            last = min(n, first + FRAMES_PER_CHUNK)
            begin, end = first * hop, (last - 1) * hop + win
            self._window(frames[: last - first], wave[begin:end], emph[begin : end - 1], sample_rate)
            self._logmel(frames[: last - first], sample_rate, out=out[first:last])
        return out

    def padded(self, waves: torch.Tensor, lengths: torch.Tensor) -> Features:
        """Log-mel features of a right-padded batch of 16 kHz waveforms, all items at once.

        The same frames, rounding and padding as calling this front end on each item alone (one FFT
        over the frames of many items instead of a few kernels per item: the training path's batches
        of a hundred clips).

        Args:
            waves: (B, N) float waveforms in [-1, 1], item i valid up to ``lengths[i]`` samples.
            lengths: (B,) valid samples per item, each at least one 25 ms window.
        """
        win, hop = _window_and_hop(SAMPLE_RATE)
        lengths = lengths.cpu().long()
        if int(lengths.min()) < win:
            raise AudioError(f"audio of {int(lengths.min())} samples is shorter than one 25 ms window ({win} samples)")
        counts = (lengths - win) // hop + 1
        total = int(counts.max())
        waves = waves[:, : (total - 1) * hop + win].to(self.device, torch.float32)
        emph = (waves[:, 1:] - PREEMPHASIS * waves[:, :-1]).mul_(INT16_SCALE)  # emph[:, i] is sample i + 1
        out = torch.zeros(waves.shape[0], total, N_MELS, device=self.device)
        budget = FRAMES_PER_CHUNK if self.device.type == "cpu" else GPU_FRAMES_PER_CHUNK
        rows = max(1, budget // total)  # whole items per chunk
        for first in range(0, waves.shape[0], rows):
            block = slice(first, first + rows)
            frames = torch.zeros(waves[block].shape[0], total, N_FFT, dtype=torch.float64, device=self.device)
            self._window(frames, waves[block], emph[block], SAMPLE_RATE)
            out[block] = self._logmel(frames.flatten(0, 1), SAMPLE_RATE).view(-1, total, N_MELS)
        # the mask is built on the features' device: copying a host-built one would block until the device
        # has run everything queued before it (a CTC training step: one of its 15 synchronisations)
        valid = torch.arange(total, device=self.device)[None, :] < counts.to(self.device, non_blocking=True)[:, None]
        return Features(out * valid[..., None], counts)

    def staged(self, waves: list[torch.Tensor | np.ndarray]) -> Features:
        """:meth:`padded` for B host 16 kHz waveforms: staged in one host buffer (page-locked for a GPU) and
        sent in one asynchronous copy, instead of a blocking copy and a dozen small kernels per item. What
        ``__call__`` does on a GPU; the same features as each item alone (``test_features``)."""
        lengths = torch.tensor([len(w) for w in waves], dtype=torch.int64)
        host = torch.zeros(len(waves), int(lengths.max()), pin_memory=self.device.type == "cuda")
        for row, wave in zip(host, waves, strict=True):
            row[: len(wave)] = torch.as_tensor(wave, dtype=torch.float32)
        return self.padded(host.to(self.device, non_blocking=True), lengths)

    def __call__(
        self, waves: list[torch.Tensor | np.ndarray], sample_rates: list[int] | int = SAMPLE_RATE
    ) -> Features:
        """Log-mel features for a batch of mono waveforms, each computed alone, then right-padded with 0.0.

        Args:
            waves: B 1-D float waveforms in [-1, 1] (16 kHz, or 8 kHz for the fill-zero path).
            sample_rates: one rate for all, or one per waveform.

        Returns:
            :class:`Features` on this front end's device.
        """
        if isinstance(sample_rates, int):
            sample_rates = [sample_rates] * len(waves)
        if (
            self.device.type == "cuda"
            and waves
            and all(r == SAMPLE_RATE for r in sample_rates)
            and not any(isinstance(w, torch.Tensor) and w.device.type != "cpu" for w in waves)
        ):
            return self.staged(waves)
        feats = [self.utterance(w, r) for w, r in zip(waves, sample_rates, strict=True)]
        lengths = torch.from_numpy(np.array([f.shape[0] for f in feats], dtype=np.int64))
        if len(feats) == 1:  # nothing to pad: a view, no copy
            return Features(feats[0].unsqueeze(0), lengths)
        return Features(torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths)
