//! Rules that keep clients within bounds the node sets for itself, whatever the ACL says:
//! topics reserved to the broker.

use shoal_codec::PubAckReasonCode;

use crate::metrics as m;

/// Whether a client may not publish to `topic` without an ACL rule that names it: topics
/// starting with `$` (`$SYS/...`) are the broker's [MQTT-4.7.2-1]. Under an ACL file the
/// rules decide (their default never grants `$` topics, and `#` does not reach them), so
/// this applies where no ACL is configured.
pub(crate) fn is_reserved(topic: &str) -> bool {
    topic.starts_with('$')
}

/// The refusal of a PUBLISH (or Will) on a reserved topic when no ACL applies, counted
/// as an ACL denial.
pub(crate) fn refuse_reserved_topic(topic: &str) -> Option<PubAckReasonCode> {
    if !is_reserved(topic) {
        return None;
    }
    metrics::counter!(m::ACL_DENIED, "action" => "publish").increment(1);
    tracing::debug!(topic, "publish to a reserved `$` topic refused");
    Some(PubAckReasonCode::NotAuthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dollar_topics_are_reserved() {
        assert!(is_reserved("$SYS/broker/uptime"));
        assert!(is_reserved("$anything"));
        assert!(!is_reserved("SYS/broker"));
        assert!(!is_reserved("a/$SYS"));
        assert_eq!(
            refuse_reserved_topic("$SYS/x"),
            Some(PubAckReasonCode::NotAuthorized)
        );
        assert_eq!(refuse_reserved_topic("a/b"), None);
    }
}
