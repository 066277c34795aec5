//! The LISTEN task: other nodes' NOTIFY turned into this node's wake-ups.

use super::*;

/// Holds a LISTEN connection, reconnecting with backoff. After every (re)connect it sends a
/// `Wake`: notifications sent while it was away are lost, so the node looks again.
pub(crate) async fn listen(config: tokio_postgres::Config, signals: Signals) {
    let mut wait = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(n) = message {
                            let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
                        }
                    }
                });
                if client
                    .batch_execute(&format!(
                        "LISTEN {WAKE_CHANNEL}; LISTEN {CANCEL_CHANNEL}; LISTEN {QUEUES_CHANNEL}; LISTEN {POLICIES_CHANNEL}; LISTEN {SCHEDULES_CHANNEL}"
                    ))
                    .await
                    .is_ok()
                {
                    wait = Duration::from_millis(100);
                    // What changed while no connection listened is read again.
                    signals.notice(Notice::Wake);
                    signals.notice(Notice::Policies);
                    signals.notice(Notice::Schedules);
                    while let Some((channel, payload)) = rx.recv().await {
                        let notice = match channel.as_str() {
                            QUEUES_CHANNEL => Notice::Queues,
                            POLICIES_CHANNEL => Notice::Policies,
                            SCHEDULES_CHANNEL => Notice::Schedules,
                            CANCEL_CHANNEL => match payload.parse() {
                                Ok(id) => Notice::Cancel(id),
                                Err(_) => continue,
                            },
                            _ => Notice::Wake,
                        };
                        signals.notice(notice);
                    }
                }
                driver.abort();
                warn!("lost the LISTEN connection to PostgreSQL; reconnecting");
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?wait, "cannot open the LISTEN connection to PostgreSQL")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}
