// AudioWorklet: mono input at the context rate -> 16 kHz pcm16 frames of 100 ms, linear interpolation
// after a 2-tap box low-pass (speech energy above 8 kHz is small; the model's features stop at 8 kHz).
class Pcm16Resampler extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.step = options.processorOptions.inputRate / 16000;
    this.pos = 0; this.prev = 0; this.out = new Int16Array(1600); this.n = 0;
  }
  process(inputs) {
    const input = inputs[0][0];
    if (!input) return true;
    for (; this.pos < input.length; this.pos += this.step) {
      const i = Math.floor(this.pos), frac = this.pos - i;
      const a = i === 0 ? this.prev : input[i - 1], b = input[i];
      const s = Math.max(-1, Math.min(1, a + (b - a) * frac));
      this.out[this.n++] = s * 32767;
      if (this.n === this.out.length) { this.port.postMessage(this.out.buffer.slice(0)); this.n = 0; }
    }
    this.pos -= input.length; this.prev = input[input.length - 1];
    return true;
  }
}
registerProcessor("pcm16-resampler", Pcm16Resampler);
