// worklet.js — AudioWorklet processor for the steno page: collects the microphone's
// first channel into ~100 ms Float32Array batches and posts them to app.js.
class StenoCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    // ~100 ms at the context's own rate (`sampleRate` is a global of the worklet
    // scope): one message per 128-sample render quantum would be ~375 messages/s.
    this.size = Math.round(sampleRate / 10);
    this.buf = new Float32Array(this.size);
    this.len = 0;
    this.stopped = false;
    // On 'stop' send what is left, then say so, so that app.js sends {"type":"end"}
    // only after the last samples.
    this.port.onmessage = (e) => {
      if (e.data !== 'stop') return;
      this.flush();
      this.stopped = true;
      this.port.postMessage('stopped');
    };
  }

  flush() {
    if (this.len > 0) {
      const out = this.len === this.size ? this.buf : this.buf.slice(0, this.len);
      // Transfer, not copy: the buffer moves to the main thread and we start a new one.
      this.port.postMessage(out, [out.buffer]);
    }
    this.buf = new Float32Array(this.size);
    this.len = 0;
  }

  process(inputs) {
    if (this.stopped) return false; // lets the browser drop the node
    const ch = inputs[0] && inputs[0][0]; // absent while nothing is connected
    for (let i = 0; ch && i < ch.length; ) {
      const n = Math.min(ch.length - i, this.size - this.len);
      this.buf.set(ch.subarray(i, i + n), this.len);
      this.len += n;
      i += n;
      if (this.len === this.size) this.flush();
    }
    return true; // outputs stay zero-filled: silence
  }
}

registerProcessor('steno-capture', StenoCapture);
