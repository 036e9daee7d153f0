//! The end-to-end tier: the real `hookflash` binary (or the relay on real sockets) with real
//! peers on loopback — sipp scenarios, baresip, HTTP clients, schemathesis — checked on the wire:
//! what a phone received, what the API returned, what the log says. Each test starts its own
//! daemon on ports picked free at run time and kills everything it spawned. The in-process tier
//! (sans-IO cores on a virtual clock) is tests/in_process/.
//!
//! Needs sipp (Debian `sip-tester`) with CAP_NET_RAW for its RTP playback, baresip, linphonec
//! (`linphone-cli`), and schemathesis in `.venv` (`.ci/run` installs them all).

mod common;

mod api_calls;
mod api_hostile;
mod api_schema;
mod baresip_call;
mod call_path;
mod cli_check;
mod cli_match;
mod codecs;
mod conformance;
mod daemon_reload;
mod linphone_call;
mod media_playback;
mod replaces;
mod sip_register;
mod sip_tcp;
mod source_limits;
mod three_way;
mod toll_fraud;
mod transfer_calls;
