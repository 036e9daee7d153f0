//! `record`'s call behaviour: start, stop or toggle the call's recording at once, whatever else
//! runs on the call (the file itself is the media plane's and the recorder thread's).

use crate::events::{EventKind, Role};
use crate::leg::LegId;
use crate::modules::context::CallContext;

use super::{RecordAction, RecordData};

/// Starts or stops recording as `data` says; toggling remembers whether the call records.
pub fn run(ctx: &mut dyn CallContext, presser: LegId, data: &RecordData) {
    let start = match data.action {
        RecordAction::Start => true,
        RecordAction::Stop => false,
        RecordAction::Toggle => !ctx.recording(),
    };
    if start == ctx.recording() {
        return;
    }
    ctx.record(start.then_some((data.path.as_str(), data.time_limit)));
    let path = data.path.clone();
    let kind = if start {
        EventKind::RecordStarted { path }
    } else {
        EventKind::RecordStopped { path }
    };
    ctx.event(kind, &[(Role::Presser, presser)]);
}
