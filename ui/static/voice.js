// The page's voice (server side: ui/voice.py). Served from this server, so the CSP allows it.
// - "Read replies aloud": each reply is heard while it is written (GET /voice/live streams its
//   speech as 16-bit PCM; played with Web Audio from the first sentence)
// - a speaker button under every reply: read it aloud / stop
// - Dictate: one click starts, one stops; the transcript goes into the input box to correct
// - Voice mode: one button; it listens, finds the end of what you say (energy VAD on the
//   echo-cancelled microphone), sends it, speaks the reply as it streams and listens again;
//   talking over the reply (barge-in) stops the speech and the generation
// Without a microphone, speech recognition or a voice, the buttons that need them are not shown.
(function () {
  "use strict";
  const $ = (selector) => document.querySelector(selector);
  const VAD = {
    frameMs: 20, // analysis step
    minRms: 0.012, // never below this (quiet rooms)
    startFactor: 3.0, // speech = this many times the noise floor...
    startMs: 120, // ...for this long
    endMs: 800, // silence that ends an utterance
    minSpeechMs: 300, // shorter bursts are ignored (a click, a cough)
    maxSpeechMs: 30000,
    prerollMs: 400, // kept from before the start, so the first syllable is not cut
    bargeFactor: 4.0, // talking over the reply needs a little more (echo residue)
    bargeMs: 250,
  };
  const SAMPLE_RATE_ASR = 16000;

  const key = (window.crypto && crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`)
    .replace(/[^A-Za-z0-9_-]/g, "");
  const prefs = { read: localStorage.getItem("assistant.voice.read") === "1" };
  let config = { tts: false, asr: false, voices: [] };
  const stats = { chunks: 0, seconds: 0, heard: [], plays: 0, stops: 0, bargeIns: 0, utterances: 0, transcripts: [], firstAudioMs: null, lastError: null, turns: [] };
  const voice = { mode: "off", language: null, stats, key }; // off | listening | hearing | sending | replying
  window.assistantVoice = voice; // for a person in the console, and the browser tests

  const stopButton = () => $("#input button.stop-button") || $("#input button[aria-label='Stop']");
  const submitButton = () => $("#input button.submit-button") || $("#input button[aria-label='Submit']");
  const answering = () => { const b = stopButton(); return !!b && b.offsetParent !== null; };

  // -- the hidden state the page's answer handler reads -----------------------------------------
  function writeState() {
    const field = $("#voice-state textarea, #voice-state input");
    if (!field) return;
    const value = JSON.stringify({ tab: key, read: config.tts && (prefs.read || voice.mode !== "off"), language: voice.language });
    if (field.value !== value) {
      field.value = value;
      field.dispatchEvent(new Event("input", { bubbles: true }));
    }
  }

  // -- playing speech ---------------------------------------------------------------------------
  let audio = null; // one AudioContext for playback, made (or resumed) on a click or key
  function audioContext() {
    if (!audio) audio = new (window.AudioContext || window.webkitAudioContext)();
    if (audio.state === "suspended") audio.resume();
    return audio;
  }
  for (const kind of ["pointerdown", "keydown"]) document.addEventListener(kind, () => { if (config.tts) audioContext(); }, true);

  const playback = { token: 0, sources: [], until: 0, startedAt: null, abort: null, playing: false, what: null };
  voice.playback = playback;

  // What the last play gave: seconds of speech received, and how much of it was heard.
  function noteHeard() {
    if (playback.startedAt === null || !audio) return;
    const heard = Math.max(0, Math.min(audio.currentTime, playback.until) - playback.startedAt);
    stats.heard.push({ scheduled: playback.until - playback.startedAt, heard });
    playback.startedAt = null;
  }

  function stopPlayback() {
    noteHeard();
    playback.token++;
    if (playback.abort) playback.abort.abort();
    playback.abort = null;
    for (const s of playback.sources) { try { s.stop(); } catch (e) { /* already ended */ } }
    playback.sources = [];
    if (playback.playing) stats.stops++;
    playback.playing = false;
    playback.what = null;
    refresh();
  }

  // Play a streamed 16-bit PCM response as it arrives. Resolves when it has been heard (or stopped).
  async function playStream(response, token, what) {
    const rate = Number(response.headers.get("X-Sample-Rate")) || 22050;
    const ctx = audioContext();
    const reader = response.body.getReader();
    let left = new Uint8Array(0);
    let at = 0;
    playback.playing = true;
    playback.what = what;
    stats.plays++;
    refresh();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (token !== playback.token) { reader.cancel().catch(() => {}); return; }
        if (done) break;
        const bytes = new Uint8Array(left.length + value.length);
        bytes.set(left);
        bytes.set(value, left.length);
        const n = bytes.length >> 1;
        left = bytes.slice(n * 2);
        if (!n) continue;
        const view = new DataView(bytes.buffer, 0, n * 2);
        const samples = new Float32Array(n);
        for (let i = 0; i < n; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
        const buffer = ctx.createBuffer(1, n, rate);
        buffer.copyToChannel(samples, 0);
        const source = ctx.createBufferSource();
        source.buffer = buffer;
        source.connect(ctx.destination);
        at = Math.max(at, ctx.currentTime + 0.01);
        if (playback.startedAt === null) {
          playback.startedAt = at;
          if (turn && what === "live" && !turn.firstAudio) {
            turn.firstAudio = performance.now() + (at - ctx.currentTime) * 1000;
            turn.firstAudioWall = Date.now() + (at - ctx.currentTime) * 1000;
          }
        }
        source.start(at);
        at += buffer.duration;
        playback.sources.push(source);
        playback.until = at;
        if (stats.firstAudioMs === null) stats.firstAudioMs = performance.now();
        stats.chunks++;
        stats.seconds += buffer.duration;
      }
      while (token === playback.token && ctx.currentTime < at) await sleep(50);
    } catch (e) {
      if (e.name !== "AbortError") stats.lastError = String(e);
    } finally {
      if (token === playback.token) {
        noteHeard();
        playback.playing = false;
        playback.what = null;
        playback.sources = [];
        refresh();
      }
    }
  }

  async function speakText(text, what) {
    stopPlayback();
    const token = playback.token;
    const abort = new AbortController();
    playback.abort = abort;
    try {
      const response = await fetch("/voice/say", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text, language: voice.language }),
        signal: abort.signal,
      });
      await handleSpeech(response, token, what);
    } catch (e) {
      if (e.name !== "AbortError") say("Could not read it aloud.");
    }
  }

  async function handleSpeech(response, token, what) {
    if (response.status === 204) return;
    if (!response.ok) { say("Could not read it aloud."); return; }
    if ((response.headers.get("content-type") || "").startsWith("application/json")) {
      const info = await response.json();
      if (info.missing_language) {
        say(`No voice is installed for this language (${info.missing_language}): start the app with --tts-voice and a Piper voice for it.`);
      }
      return;
    }
    await playStream(response, token, what);
  }

  // -- each reply, heard while it is written ------------------------------------------------------
  let serial = 0;
  let polling = false;
  async function pollLive() {
    if (polling) return;
    polling = true;
    try {
      while (config.tts && (prefs.read || voice.mode !== "off")) {
        writeState();
        const abort = new AbortController();
        let response;
        try {
          response = await fetch(`/voice/live?tab=${key}&after=${serial}`, { signal: abort.signal });
        } catch (e) {
          await sleep(1000);
          continue;
        }
        const got = Number(response.headers.get("X-Reply-Serial"));
        if (got > serial) serial = got;
        if (response.status === 204) continue;
        if (!response.ok) { await sleep(1000); continue; }
        if (!(prefs.read || voice.mode !== "off")) { abort.abort(); break; }
        stopPlayback();
        const token = playback.token;
        playback.abort = abort;
        await handleSpeech(response, token, "live");
      }
    } finally {
      polling = false;
    }
  }

  // -- the microphone -------------------------------------------------------------------------
  const mic = { stream: null, ctx: null, node: null, rate: 48000, onFrame: null };
  async function openMic() {
    if (mic.stream) return true;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) { say("This browser gives the page no microphone."); return false; }
    try {
      mic.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
    } catch (e) {
      say("No microphone (or it was not allowed): typing still works.");
      return false;
    }
    mic.ctx = new (window.AudioContext || window.webkitAudioContext)();
    mic.rate = mic.ctx.sampleRate;
    const source = mic.ctx.createMediaStreamSource(mic.stream);
    const size = 1 << Math.round(Math.log2(mic.rate * VAD.frameMs / 1000)); // ~20 ms (1024 at 48 kHz)
    mic.node = mic.ctx.createScriptProcessor(Math.max(256, Math.min(16384, size)), 1, 1);
    mic.node.onaudioprocess = (event) => { if (mic.onFrame) mic.onFrame(new Float32Array(event.inputBuffer.getChannelData(0))); };
    source.connect(mic.node);
    const mute = mic.ctx.createGain();
    mute.gain.value = 0;
    mic.node.connect(mute);
    mute.connect(mic.ctx.destination); // a processor only runs when connected to an output
    return true;
  }
  function closeMic() {
    mic.onFrame = null;
    if (mic.stream) for (const t of mic.stream.getTracks()) t.stop();
    if (mic.ctx) mic.ctx.close();
    mic.stream = mic.ctx = mic.node = null;
  }

  function rms(frame) {
    let sum = 0;
    for (let i = 0; i < frame.length; i++) sum += frame[i] * frame[i];
    return Math.sqrt(sum / frame.length);
  }

  function wav(frames, rate) {
    // to 16 kHz mono 16-bit (averaging the samples each output sample covers)
    let total = 0;
    for (const f of frames) total += f.length;
    const all = new Float32Array(total);
    let o = 0;
    for (const f of frames) { all.set(f, o); o += f.length; }
    const ratio = rate / SAMPLE_RATE_ASR;
    const n = Math.floor(total / ratio);
    const out = new DataView(new ArrayBuffer(44 + n * 2));
    const text = (at, s) => { for (let i = 0; i < s.length; i++) out.setUint8(at + i, s.charCodeAt(i)); };
    text(0, "RIFF"); out.setUint32(4, 36 + n * 2, true); text(8, "WAVEfmt ");
    out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, 1, true);
    out.setUint32(24, SAMPLE_RATE_ASR, true); out.setUint32(28, SAMPLE_RATE_ASR * 2, true);
    out.setUint16(32, 2, true); out.setUint16(34, 16, true); text(36, "data"); out.setUint32(40, n * 2, true);
    for (let i = 0; i < n; i++) {
      const a = Math.floor(i * ratio), b = Math.max(a + 1, Math.floor((i + 1) * ratio));
      let s = 0;
      for (let j = a; j < b && j < total; j++) s += all[j];
      const v = Math.max(-1, Math.min(1, s / (b - a)));
      out.setInt16(44 + i * 2, v * 32767, true);
    }
    return new Blob([out.buffer], { type: "audio/wav" });
  }

  async function transcribe(frames) {
    const response = await fetch("/voice/transcribe", {
      method: "POST",
      headers: { "Content-Type": "audio/wav", "X-Voice": "1" },
      body: wav(frames, mic.rate),
    });
    const info = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(info.detail || `error ${response.status}`);
    return info;
  }

  function inputField() { return $("#input textarea"); }
  function putInBox(text, replace) {
    const field = inputField();
    if (!field) return;
    const before = replace ? "" : field.value.trimEnd();
    field.value = before ? `${before} ${text}` : text;
    field.dispatchEvent(new Event("input", { bubbles: true }));
    field.focus();
  }

  // -- dictation ----------------------------------------------------------------------------------
  const dictation = { on: false, frames: [] };
  async function toggleDictation() {
    if (dictation.on) {
      dictation.on = false;
      mic.onFrame = null;
      const frames = dictation.frames;
      dictation.frames = [];
      if (voice.mode === "off") closeMic();
      refresh("Transcribing…");
      try {
        const heard = await transcribe(frames);
        if (heard.text) { putInBox(heard.text, false); say("Check the text, then send it."); }
        else say("Nothing was heard.");
      } catch (e) {
        say(`Could not transcribe: ${e.message}`);
      }
      refresh();
      return;
    }
    if (voice.mode !== "off") await stopVoiceMode();
    if (!(await openMic())) return;
    dictation.on = true;
    dictation.frames = [];
    mic.onFrame = (frame) => { if (dictation.on) dictation.frames.push(frame); };
    refresh("Listening… click again to stop.");
  }

  // -- voice mode (hands-free) -------------------------------------------------------------------
  const vad = { floor: 0.004, loud: 0, quiet: 0, speech: [], preroll: [], inSpeech: false, speechMs: 0 };

  function resetVad() {
    vad.loud = vad.quiet = vad.speechMs = vad.lastLoud = 0;
    vad.speech = [];
    vad.inSpeech = false;
  }

  function replyActive() { return answering() || playback.playing; }

  function onVoiceFrame(frame) {
    const ms = (frame.length / mic.rate) * 1000;
    const level = rms(frame);
    const busy = voice.mode === "replying" && replyActive();
    const threshold = Math.max(VAD.minRms, vad.floor * (busy ? VAD.bargeFactor : VAD.startFactor));
    voice.level = level;
    if (voice.mode === "sending") return;
    if (!vad.inSpeech) {
      vad.preroll.push(frame);
      let kept = 0;
      for (const f of vad.preroll) kept += (f.length / mic.rate) * 1000;
      while (kept > VAD.prerollMs && vad.preroll.length > 1) kept -= (vad.preroll.shift().length / mic.rate) * 1000;
      if (level > threshold) {
        vad.loud += ms;
        if (vad.loud >= (busy ? VAD.bargeMs : VAD.startMs)) {
          if (busy) bargeIn();
          vad.inSpeech = true;
          vad.speech = vad.preroll.slice();
          vad.preroll = [];
          vad.speechMs = vad.loud;
          vad.quiet = 0;
          voice.mode = "hearing";
          refresh();
        }
      } else {
        vad.loud = 0;
        vad.floor = vad.floor * 0.95 + Math.min(level, 0.05) * 0.05; // the room's noise, slowly
      }
      return;
    }
    vad.speech.push(frame);
    vad.speechMs += ms;
    if (level > threshold * 0.7) { vad.quiet = 0; vad.lastLoud = performance.now(); } else vad.quiet += ms;
    if (vad.quiet >= VAD.endMs || vad.speechMs >= VAD.maxSpeechMs) {
      const frames = vad.speech;
      const long = vad.speechMs - vad.quiet >= VAD.minSpeechMs;
      const spokeUntil = vad.lastLoud || performance.now();
      resetVad();
      if (long) sendUtterance(frames, spokeUntil);
      else { voice.mode = "listening"; refresh(); }
    }
  }

  function bargeIn() {
    stats.bargeIns++;
    stopPlayback();
    if (answering()) stopButton().click();
  }

  // One turn's timeline (performance.now() ms), for the benchmark and a person's console.
  let turn = null;

  async function sendUtterance(frames, spokeUntil) {
    voice.mode = "sending";
    stats.utterances++;
    turn = { spokeUntil, speechEnd: performance.now() };
    stats.turns.push(turn);
    refresh("Transcribing…");
    let heard;
    try {
      heard = await transcribe(frames);
    } catch (e) {
      say(`Could not transcribe: ${e.message}`);
      voice.mode = "listening";
      refresh();
      return;
    }
    turn.transcribed = performance.now();
    turn.asrS = heard.elapsed_s;
    if (voice.mode === "off") return;
    if (!heard.text) { voice.mode = "listening"; refresh("Listening…"); return; }
    stats.transcripts.push(heard.text);
    voice.language = heard.language || null;
    writeState();
    for (let i = 0; i < 100 && answering(); i++) await sleep(50); // a stopped reply ends first
    putInBox(heard.text, true);
    await Promise.resolve(); // the page takes the new text in on the input event itself
    const send = $("#voice-send") || submitButton(); // send + answer in one event (ui/voice.py)
    turn.sent = performance.now();
    turn.sentWall = Date.now();
    if (send) send.click();
    voice.mode = "replying";
    refresh();
    pollLive();
    // Listen again once the reply has been written and heard.
    await sleep(500);
    while (voice.mode === "replying" && (replyActive() || speechPending())) await sleep(100);
    if (voice.mode === "replying") { voice.mode = "listening"; refresh(); }
  }

  function speechPending() {
    // the reply was written, but its speech may still be starting
    return config.tts && polling && !playback.playing && performance.now() - lastAnswerSeen < 1200;
  }
  let lastAnswerSeen = 0;

  async function startVoiceMode() {
    if (dictation.on) await toggleDictation();
    if (!(await openMic())) return;
    if (config.tts) audioContext();
    voice.mode = "listening";
    resetVad();
    mic.onFrame = onVoiceFrame;
    writeState();
    pollLive();
    refresh("Listening… just talk.");
  }

  async function stopVoiceMode() {
    voice.mode = "off";
    resetVad();
    closeMic();
    stopPlayback();
    writeState();
    refresh("Voice mode off.");
  }

  // -- the buttons ----------------------------------------------------------------------------
  let bar = null;
  let status = null;
  let statusTimer = null;
  function say(text) {
    if (!status) return;
    status.textContent = text;
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => { status.textContent = ""; }, 6000);
  }

  function button(id, label, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.id = id;
    b.className = "voice-button";
    b.textContent = label;
    b.addEventListener("click", onClick);
    return b;
  }

  const STYLE = `
    #voice-bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 4px 0; }
    #voice-bar .voice-button, #chat .voice-speak {
      border: 1px solid var(--border-color-primary); border-radius: var(--radius-sm);
      background: var(--button-secondary-background-fill); color: var(--button-secondary-text-color);
      padding: 4px 10px; font-size: var(--text-sm); cursor: pointer; }
    #voice-bar .voice-button[aria-pressed=true] { background: var(--button-primary-background-fill);
      color: var(--button-primary-text-color); }
    #voice-bar label { display: inline-flex; gap: 4px; align-items: center; font-size: var(--text-sm); }
    #voice-status { font-size: var(--text-sm); color: var(--body-text-color-subdued); }
    #chat .voice-speak { padding: 1px 8px; margin-left: 4px; font-size: var(--text-xs); }`;

  function buildBar() {
    const row = $(".turn-actions");
    if (!row || $("#voice-bar")) return;
    if (!$("#voice-style")) {
      const style = document.createElement("style");
      style.id = "voice-style";
      style.textContent = STYLE;
      document.head.appendChild(style);
    }
    bar = document.createElement("div");
    bar.id = "voice-bar";
    bar.setAttribute("role", "group");
    bar.setAttribute("aria-label", "Voice");
    const hasMic = !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
    if (config.asr && hasMic) {
      bar.append(button("voice-dictate", "Dictate", toggleDictation));
      bar.append(button("voice-mode", "Voice mode", () => (voice.mode === "off" ? startVoiceMode() : stopVoiceMode())));
    }
    if (config.tts) {
      const label = document.createElement("label");
      label.id = "voice-read-label";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.id = "voice-read";
      box.checked = prefs.read;
      box.addEventListener("change", () => {
        prefs.read = box.checked;
        localStorage.setItem("assistant.voice.read", prefs.read ? "1" : "0");
        if (prefs.read) { audioContext(); pollLive(); } else if (playback.what === "live") stopPlayback();
        writeState();
      });
      label.append(box, document.createTextNode(" Read replies aloud"));
      bar.append(label);
    }
    status = document.createElement("span");
    status.id = "voice-status";
    status.setAttribute("role", "status");
    status.setAttribute("aria-live", "polite");
    bar.append(status);
    row.after(bar);
    refresh();
  }

  function refresh(text) {
    const dictate = $("#voice-dictate");
    if (dictate) {
      dictate.textContent = dictation.on ? "Stop dictation" : "Dictate";
      dictate.setAttribute("aria-pressed", String(dictation.on));
    }
    const mode = $("#voice-mode");
    if (mode) {
      const on = voice.mode !== "off";
      mode.textContent = on ? "End voice mode" : "Voice mode";
      mode.setAttribute("aria-pressed", String(on));
      mode.dataset.state = voice.mode;
    }
    if (text) say(text);
    else if (voice.mode === "listening") say("Listening…");
    else if (voice.mode === "hearing") say("Hearing you…");
    else if (voice.mode === "replying" && playback.playing) say("Speaking… talk to interrupt.");
    for (const b of document.querySelectorAll("#chat .voice-speak")) {
      const mine = playback.playing && playback.what === b;
      b.textContent = mine ? "Stop" : "Read aloud";
      b.setAttribute("aria-label", mine ? "Stop reading" : "Read aloud");
    }
  }

  // The words of a reply as shown: code blocks and tables left out, blocks on their own lines.
  function spokenText(node) {
    const skip = new Set(["PRE", "TABLE", "BUTTON", "svg", "IMG", "VIDEO", "AUDIO", "SCRIPT", "STYLE"]);
    const block = /^(P|LI|H[1-6]|BLOCKQUOTE|DIV|UL|OL|BR|TR)$/;
    let out = "";
    const walk = (n) => {
      if (n.nodeType === Node.TEXT_NODE) { out += n.nodeValue; return; }
      if (n.nodeType !== Node.ELEMENT_NODE || skip.has(n.nodeName) || n.classList.contains("voice-speak")) return;
      if (n.classList.contains("message-buttons") || n.classList.contains("version-nav")) return;
      for (const c of n.childNodes) walk(c);
      if (block.test(n.nodeName)) out += "\n";
    };
    walk(node);
    return out.replace(/\n{3,}/g, "\n\n").trim();
  }

  function speakerButtons() {
    if (!config.tts) return;
    const replies = document.querySelectorAll("#chat [data-testid=bot]");
    replies.forEach((reply, index) => {
      const row = reply.closest(".message-row") || reply;
      const after = row.nextElementSibling;
      const host = after && after.classList.contains("message-buttons") ? after : row;
      if (host.querySelector(":scope .voice-speak")) return;
      const last = index === replies.length - 1;
      if (last && answering()) return; // not while it is being written
      const b = document.createElement("button");
      b.type = "button";
      b.className = "voice-speak";
      b.textContent = "Read aloud";
      b.setAttribute("aria-label", "Read aloud");
      b.addEventListener("click", (event) => {
        event.stopPropagation();
        if (playback.playing && playback.what === b) { stopPlayback(); return; }
        audioContext();
        speakText(spokenText(reply), b);
      });
      (host.querySelector(".icon-button-wrapper") || host).appendChild(b);
    });
  }

  // Stop (the button or Esc, which clicks it) and a new chat silence the reply at once.
  document.addEventListener("click", (event) => {
    const target = event.target;
    if (!target || !target.closest) return;
    if (target.closest("#input button.stop-button, #input button[aria-label='Stop'], #new-chat")) stopPlayback();
  }, true);

  function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

  async function start() {
    try {
      const response = await fetch("/voice/config");
      if (response.ok) config = await response.json();
    } catch (e) { /* no voice routes: nothing to show */ }
    voice.config = config;
    setInterval(() => {
      buildBar();
      writeState();
      speakerButtons();
      if (answering()) lastAnswerSeen = performance.now();
    }, 200);
    if (prefs.read && config.tts) pollLive();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
