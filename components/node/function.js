// The serverless function in Node.js: get a backend connection, send one request, verify the
// echo, print one JSON record with the keys of components/function.py, exit 0 iff ok.
//
// usage: node function.js --mode {direct,fd3} [--target HOST:PORT] [--payload-size N]
//                         [--timeout S] [--requests N] [--no-fallback]
//   direct  dns.lookup the target (resolve_us), then TCP-connect (handshake_us): acquire_us = both;
//           verify_us = the socket check.
//   fd3     adopt the connection components/c/fd3_entrypoint.c placed at fd 3 (LISTEN_FDS=1,
//           LISTEN_PID = this process): new net.Socket({fd: 3}). Node's standard library cannot
//           receive an fd over a Unix socket, but it can adopt an inherited one. fd_recv_us = the
//           entrypoint's acquire; connect_us adds the adoption here. Without an inherited fd
//           (COLDSTART_FD3_FALLBACK says why) it connects directly, path "fallback".
// Phases as in every function of the project (coldstart_bench/phases.py): library_load_us (0:
// nothing is loaded for the connection), acquire_us, verify_us, session_setup_us (fd3: the
// adoption), connect_us = their sum (+ socket_attempt_us on a fallback), first_request_us;
// --requests N round trips, request_rtt_us their median. Node cannot page in its own code (no
// madvise in its standard library): prefetch_us is null, in both of its arms.
// Timing: t_*_ns are CLOCK_REALTIME (performance.timeOrigin + performance.now(), sub-µs);
// runtime_startup_us = t_main_ns - COLDSTART_FD3_T_EXEC_NS (exec to main, needs the entrypoint);
// runtime_init_us = Node's own bootstrap (its time origin) to main.
"use strict";

const { performance } = require("perf_hooks");
const wallNs = () => Math.round((performance.timeOrigin + performance.now()) * 1e6);
const T_MAIN_NS = wallNs();
const monoNs = () => process.hrtime.bigint();
const usSince = (t0) => Math.round(Number(monoNs() - t0) / 100) / 10;

const crypto = require("crypto");
const dns = require("dns");
const net = require("net");
const os = require("os");

const LISTEN_FD = 3;
const USAGE =
  "usage: node function.js --mode {direct,fd3} [--target HOST:PORT] [--payload-size N] [--timeout S] [--requests N] [--no-fallback]\n";

function parse(argv) {
  const opts = { mode: null, target: "echo:7000", payloadSize: 64, timeout: 2.0, fallback: true, requests: 1 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "-h" || arg === "--help") {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    if (arg === "--no-fallback") {
      opts.fallback = false;
      continue;
    }
    if (arg === "--fallback") {
      opts.fallback = true;
      continue;
    }
    let [key, value] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    if (!["--mode", "--target", "--payload-size", "--timeout", "--requests"].includes(key)) throw new Error(`unknown argument ${arg}`);
    if (value === undefined) {
      if (++i >= argv.length) throw new Error(`${key} needs a value`);
      value = argv[i];
    }
    if (key === "--mode") opts.mode = value;
    else if (key === "--target") opts.target = value;
    else if (key === "--payload-size") opts.payloadSize = Number(value);
    else if (key === "--requests") opts.requests = Number(value);
    else opts.timeout = Number(value);
  }
  if (opts.mode !== "direct" && opts.mode !== "fd3") throw new Error("--mode must be direct or fd3");
  if (!Number.isInteger(opts.payloadSize) || opts.payloadSize < 24) throw new Error("--payload-size must be an integer >= 24");
  if (!(opts.timeout > 0)) throw new Error("--timeout must be > 0");
  if (!Number.isInteger(opts.requests) || opts.requests < 1 || opts.requests > 1000) throw new Error("--requests must be an integer in [1, 1000]");
  return opts;
}

function splitTarget(target) {
  const at = target.lastIndexOf(":");
  let host = target.slice(0, at);
  const port = Number(target.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`expected HOST:PORT, got ${target}`);
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  return { host, port };
}

const formatPeer = (address, port) => (address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`);

function peerOf(sock) {
  return sock.remoteAddress ? formatPeer(sock.remoteAddress, sock.remotePort) : null;
}

// What the adopted socket is. O_NONBLOCK is not observable from Node (libuv sets it on
// adoption anyway); the entrypoint refuses a non-blocking fd before exec (bad_fd).
function checkSocket(sock, expectedPeer) {
  const peer = peerOf(sock);
  const family = sock.remoteFamily === "IPv6" ? "AF_INET6" : sock.remoteFamily === "IPv4" ? "AF_INET" : null;
  const matches = expectedPeer == null || peer === expectedPeer;
  return {
    family,
    type: family ? "SOCK_STREAM" : null,
    connected: peer !== null,
    peer,
    expected_peer: expectedPeer ?? null,
    peer_matches: matches,
    blocking: null,
    ok: Boolean(family && peer !== null && matches),
  };
}

function lookup(host) {
  return new Promise((resolve, reject) => dns.lookup(host, (err, address, family) => (err ? reject(err) : resolve({ address, family }))));
}

function connectTcp(address, port, timeoutS) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: address, port, noDelay: true });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`TimeoutError: connect to ${address}:${port} timed out`));
    }, timeoutS * 1000);
    sock.once("connect", () => {
      clearTimeout(timer);
      resolve(sock);
    });
    sock.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

// Send a payload carrying a random nonce and read the whole echo back; resolves to ns.
function echo(sock, size, timeoutS) {
  const nonce = crypto.randomBytes(8).toString("hex");
  const body = Buffer.from(`REQ ${nonce} ${"x".repeat(size)}`).subarray(0, size - 1);
  const payload = Buffer.concat([body, Buffer.from("\n")]);
  return new Promise((resolve, reject) => {
    const chunks = [];
    let got = 0;
    const t0 = monoNs();
    const timer = setTimeout(() => finish(new Error(`TimeoutError: no full echo within ${timeoutS}s (${got} bytes)`)), timeoutS * 1000);
    function finish(err, ns) {
      clearTimeout(timer);
      sock.removeAllListeners("data");
      if (err) reject(err);
      else resolve(ns);
    }
    sock.on("data", (chunk) => {
      chunks.push(chunk);
      got += chunk.length;
      if (got < payload.length) return;
      const ns = Number(monoNs() - t0);
      if (!Buffer.concat(chunks).equals(payload)) finish(new Error("ValueError: echo mismatch"));
      else finish(null, ns);
    });
    sock.once("end", () => finish(new Error(`ConnectionError: backend closed after ${got} of ${payload.length} echoed bytes`)));
    sock.once("error", (err) => finish(err));
    sock.write(payload);
  });
}

const envNumber = (name) => (process.env[name] ? Number(process.env[name]) : null);

// The systemd rule: LISTEN_FDS=1 and LISTEN_PID naming this very process.
const inheritedFd3 = () => process.env.LISTEN_FDS === "1" && Number(process.env.LISTEN_PID) === process.pid;

function adoptFd3(rec, fallback) {
  const t0 = monoNs();
  const acquireUs = envNumber("COLDSTART_FD3_ACQUIRE_US") ?? 0;
  const entryVerifyUs = envNumber("COLDSTART_FD3_VERIFY_US") ?? 0;
  rec.pre_main_us = Math.round((acquireUs + entryVerifyUs) * 10) / 10;
  rec.library = "fd3-entrypoint";
  let why = process.env.COLDSTART_FD3_FALLBACK || "no_listen_fds: LISTEN_FDS/LISTEN_PID do not name this process";
  if (inheritedFd3()) {
    let reply = {};
    try {
      reply = JSON.parse(process.env.COLDSTART_FD3_REPLY || "{}");
    } catch {
      reply = {};
    }
    let sock = null;
    try {
      sock = new net.Socket({ fd: LISTEN_FD, readable: true, writable: true });
    } catch (err) {
      why = `bad_fd: fd ${LISTEN_FD} cannot be adopted: ${err.message}`;
    }
    if (sock) {
      sock.setNoDelay(true);
      rec.pool_id = reply.id ?? null;
      const tCheck = monoNs();
      rec.fd_check = checkSocket(sock, reply.peer);
      const checkUs = usSince(tCheck);
      if (rec.fd_check.ok) {
        rec.t_connected_ns = wallNs();
        rec.fd_recv_us = rec.acquire_us = acquireUs;
        rec.verify_us = Math.round((entryVerifyUs + checkUs) * 10) / 10;
        rec.session_setup_us = Math.round((usSince(t0) - checkUs) * 10) / 10;
        rec.connect_us = Math.round((rec.acquire_us + rec.verify_us + rec.session_setup_us) * 10) / 10;
        return { sock, attemptUs: 0 };
      }
      sock.destroy();
      why = `bad_fd: ${JSON.stringify(rec.fd_check)}`;
    }
  }
  if (!fallback) throw new Error(`PoolError: no connection at fd 3: ${why}`);
  rec.path = "fallback";
  rec.fallback_reason = why;
  rec.socket_attempt_us = Math.round((acquireUs + entryVerifyUs + usSince(t0)) * 10) / 10;
  return { sock: null, attemptUs: rec.socket_attempt_us };
}

async function run(opts) {
  const tExec = envNumber("COLDSTART_FD3_T_EXEC_NS");
  const rec = {
    ok: false,
    mode: opts.mode,
    path: opts.mode,
    runtime: `node ${process.version}`,
    error: null,
    t_main_ns: T_MAIN_NS,
    t_connected_ns: null,
    t_first_reply_ns: null,
    t_end_ns: null,
    // The entrypoint's first instruction when it started us, else Node's own time origin.
    t_entry_ns: envNumber("COLDSTART_FD3_T_START_NS") ?? Math.round(performance.timeOrigin * 1e6),
    t_exec_ns: tExec,
    runtime_startup_us: tExec ? Math.round((T_MAIN_NS - tExec) / 100) / 10 : null,
    runtime_init_us: Math.round(T_MAIN_NS / 1e3 - performance.timeOrigin * 1e3),
    resolve_us: null,
    handshake_us: null,
    fd_recv_us: null,
    socket_attempt_us: null,
    connect_us: null,
    library_load_us: 0,
    library: "net",
    pre_main_us: 0,
    acquire_us: null,
    verify_us: null,
    session_setup_us: null,
    first_request_us: null,
    request_rtt_us: null,
    request_rtts_us: [],
    prefetch_us: null,
    prefetch_bytes: null,
    peer: null,
    fd_check: null,
    interfaces: [],
    released: false,
    fallback_reason: null,
    pool_id: null,
  };
  let sock = null;
  try {
    let attemptUs = 0;
    if (opts.mode === "fd3") ({ sock, attemptUs } = adoptFd3(rec, opts.fallback));
    if (!sock) {
      const { host, port } = splitTarget(opts.target);
      const t0 = monoNs();
      const { address } = await lookup(host);
      const t1 = monoNs();
      sock = await connectTcp(address, port, opts.timeout);
      const t2 = monoNs();
      rec.fd_check = checkSocket(sock, null);
      const t3 = monoNs();
      rec.t_connected_ns = wallNs();
      rec.resolve_us = Number(t1 - t0) / 1e3;
      rec.handshake_us = Number(t2 - t1) / 1e3;
      rec.acquire_us = Math.round(Number(t2 - t0) / 100) / 10;
      rec.verify_us = Math.round(Number(t3 - t2) / 100) / 10;
      rec.session_setup_us = 0;
      rec.connect_us = Math.round((attemptUs + rec.acquire_us + rec.verify_us) * 10) / 10;
    }
    rec.peer = peerOf(sock);
    const rtts = [];
    for (let r = 0; r < opts.requests; r++) {
      rtts.push((await echo(sock, opts.payloadSize, opts.timeout)) / 1e3);
      if (r === 0) {
        rec.t_first_reply_ns = wallNs();
        rec.first_request_us = rtts[0];
      }
    }
    const sorted = [...rtts].sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    rec.request_rtts_us = rtts;
    rec.request_rtt_us = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    rec.ok = true;
  } catch (err) {
    rec.error = err.code ? `${err.code}: ${err.message}` : err.message;
    rec.ok = false;
  } finally {
    if (sock) sock.destroy();
  }
  rec.t_end_ns = wallNs();
  rec.interfaces = Object.keys(os.networkInterfaces());
  return rec;
}

function main() {
  let opts;
  try {
    opts = parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err.message}\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  run(opts).then((rec) => {
    process.stdout.write(JSON.stringify(rec) + "\n");
    process.exitCode = rec.ok ? 0 : 1;
  });
}

main();
