//! The NOTIFYs of a REFER's implicit subscription (RFC 3515), one task per leg that sent a
//! REFER: they go out in order (each request's CSeq rises, and a phone reads them as a story:
//! 100, 18x, final), only once the REFER's 202 has gone out and its dialog is back in the
//! confirmed state (rsipstack sends nothing in a dialog that is still answering a request), and
//! a hang-up of the leg waits behind them, so the phone learns how its transfer went before its
//! call ends. The call's task waits for the notifier as for any hang-up.

use std::time::Duration;

use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Method, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::debug;

use crate::leg::LegId;

/// How long the first NOTIFY waits for the REFER's dialog to be confirmed again: the 202 is
/// sent at once, so this is only a bound for when the stack never says so.
const CONFIRMED_WAIT: Duration = Duration::from_secs(2);

/// What a notifier sends, in order.
pub enum Notice {
    /// `SIP/2.0 {status}` as a `message/sipfrag` NOTIFY; `terminated` with the final answer.
    Refer { status: u16, terminated: bool },
    /// BYE (or CANCEL): the last thing it does.
    Hangup,
}

pub struct ReferNotifier {
    pub leg: LegId,
    queue: mpsc::UnboundedSender<Notice>,
    /// Fired when the leg's dialog is confirmed again after the 202.
    confirmed: Option<oneshot::Sender<()>>,
}

impl ReferNotifier {
    /// Starts the notifier of `leg`'s dialog `dialog` in `tasks`, for a REFER just answered 202.
    pub fn start(
        tasks: &mut JoinSet<()>,
        dialog: InviteDialog,
        call: std::sync::Arc<str>,
        leg: LegId,
    ) -> ReferNotifier {
        let (queue, mut notices) = mpsc::unbounded_channel();
        let (confirmed, is_confirmed) = oneshot::channel();
        tasks.spawn(async move {
            let _ = tokio::time::timeout(CONFIRMED_WAIT, is_confirmed).await;
            while let Some(notice) = notices.recv().await {
                match notice {
                    Notice::Refer { status, terminated } => {
                        notify(&dialog, &call, leg, status, terminated).await
                    }
                    Notice::Hangup => {
                        if let Err(e) = dialog.hangup().await {
                            debug!(call = %call, leg = %leg, "hang-up: {e}");
                        }
                        return;
                    }
                }
            }
        });
        ReferNotifier {
            leg,
            queue,
            confirmed: Some(confirmed),
        }
    }

    pub fn send(&self, notice: Notice) {
        let _ = self.queue.send(notice);
    }

    /// The leg's dialog is confirmed again: the NOTIFYs may go.
    pub fn confirmed(&mut self) {
        if let Some(c) = self.confirmed.take() {
            let _ = c.send(());
        }
    }
}

async fn notify(dialog: &InviteDialog, call: &str, leg: LegId, status: u16, terminated: bool) {
    let state = if terminated {
        "terminated;reason=noresource"
    } else {
        "active;expires=60"
    };
    let headers = vec![
        Header::Event("refer".into()),
        Header::SubscriptionState(state.into()),
        Header::ContentType("message/sipfrag".into()),
    ];
    let body = format!("SIP/2.0 {}\r\n", StatusCode::from(status));
    debug!(call = %call, leg = %leg, "NOTIFY {}", body.trim_end());
    match dialog
        .request(Method::Notify, Some(headers), Some(body.into_bytes()))
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => {
            debug!(call = %call, leg = %leg, "NOTIFY not sent: the dialog is not confirmed")
        }
        Err(e) => debug!(call = %call, leg = %leg, "NOTIFY: {e}"),
    }
}
