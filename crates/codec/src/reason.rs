//! Reason codes (MQTT 5 §2.4), one typed enum per packet family, each holding only the codes
//! that the specification allows in that packet.

use std::fmt;

/// What every reason-code enum can do: the codec uses it for acknowledgements generically.
pub trait ReasonCode: Copy + Eq + fmt::Debug + Into<u8> + 'static {
    /// The code 0x00 of this family (Success, Normal disconnection or Granted QoS 0).
    const SUCCESS: Self;
    /// Every code of the family, in numeric order.
    const ALL: &'static [Self];
    /// The code of `value`, if the family has it.
    fn from_u8(value: u8) -> Option<Self>;
    /// Codes of 0x80 and above report a failure.
    fn is_error(self) -> bool {
        self.into() >= 0x80
    }
}

macro_rules! reason_codes {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl ReasonCode for $name {
            const SUCCESS: Self = match Self::from_value(0) {
                Some(code) => code,
                None => panic!("every reason code family has a code 0x00"),
            };
            const ALL: &'static [Self] = &[$(Self::$variant),+];

            fn from_u8(value: u8) -> Option<Self> {
                Self::from_value(value)
            }
        }

        impl $name {
            const fn from_value(value: u8) -> Option<Self> {
                match value {
                    $( $value => Some(Self::$variant), )+
                    _ => None,
                }
            }
        }

        /// The code 0x00.
        impl Default for $name {
            fn default() -> Self {
                <Self as ReasonCode>::SUCCESS
            }
        }

        impl From<$name> for u8 {
            fn from(code: $name) -> Self {
                code as Self
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?} (0x{:02X})", self, *self as u8)
            }
        }
    };
}

reason_codes! {
    /// Reason codes of CONNACK (§3.2.2.2).
    ConnectReasonCode {
        /// 0x00: the connection is accepted.
        Success = 0x00,
        /// 0x80: the server does not wish to reveal the reason.
        UnspecifiedError = 0x80,
        /// 0x81: the CONNECT could not be parsed.
        MalformedPacket = 0x81,
        /// 0x82: the CONNECT breaks the specification.
        ProtocolError = 0x82,
        /// 0x83: valid, but not accepted by this server.
        ImplementationSpecificError = 0x83,
        /// 0x84: the server does not support the requested protocol level.
        UnsupportedProtocolVersion = 0x84,
        /// 0x85: the client identifier is valid UTF-8 but not allowed.
        ClientIdentifierNotValid = 0x85,
        /// 0x86: wrong user name or password.
        BadUserNameOrPassword = 0x86,
        /// 0x87: the client is not authorized to connect.
        NotAuthorized = 0x87,
        /// 0x88: the server is not available.
        ServerUnavailable = 0x88,
        /// 0x89: the server is busy; try again later.
        ServerBusy = 0x89,
        /// 0x8A: the client is banned.
        Banned = 0x8A,
        /// 0x8C: the authentication method is not supported or does not match.
        BadAuthenticationMethod = 0x8C,
        /// 0x90: the Will Topic is malformed or not accepted.
        TopicNameInvalid = 0x90,
        /// 0x95: the CONNECT exceeds the maximum permissible size.
        PacketTooLarge = 0x95,
        /// 0x97: an administrative limit is exceeded.
        QuotaExceeded = 0x97,
        /// 0x99: the Will payload does not match its Payload Format Indicator.
        PayloadFormatInvalid = 0x99,
        /// 0x9A: Will Retain is set but retain is not supported.
        RetainNotSupported = 0x9A,
        /// 0x9B: the Will QoS is above the server's Maximum QoS.
        QosNotSupported = 0x9B,
        /// 0x9C: use another server, temporarily.
        UseAnotherServer = 0x9C,
        /// 0x9D: use another server, permanently.
        ServerMoved = 0x9D,
        /// 0x9F: the connection rate limit is exceeded.
        ConnectionRateExceeded = 0x9F,
    }
}

impl ConnectReasonCode {
    /// The CONNACK return code of MQTT 3.1 and 3.1.1 that best says the same (§3.2.2.3 of
    /// 3.1.1 has six codes).
    pub const fn to_v3_return_code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::UnsupportedProtocolVersion => 1,
            Self::ClientIdentifierNotValid => 2,
            Self::BadUserNameOrPassword | Self::BadAuthenticationMethod => 4,
            Self::NotAuthorized | Self::Banned => 5,
            _ => 3,
        }
    }

    /// The code for an MQTT 3.1 or 3.1.1 CONNACK return code (0 to 5).
    pub const fn from_v3_return_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Success,
            1 => Self::UnsupportedProtocolVersion,
            2 => Self::ClientIdentifierNotValid,
            3 => Self::ServerUnavailable,
            4 => Self::BadUserNameOrPassword,
            5 => Self::NotAuthorized,
            _ => return None,
        })
    }
}

reason_codes! {
    /// Reason codes of PUBACK and PUBREC (§3.4.2.1, §3.5.2.1).
    PubAckReasonCode {
        /// 0x00: the message is accepted.
        Success = 0x00,
        /// 0x10: accepted, but there are no subscribers.
        NoMatchingSubscribers = 0x10,
        /// 0x80: not accepted, no reason given.
        UnspecifiedError = 0x80,
        /// 0x83: valid, but not accepted by this receiver.
        ImplementationSpecificError = 0x83,
        /// 0x87: the sender may not publish to this topic.
        NotAuthorized = 0x87,
        /// 0x90: the topic name is not accepted.
        TopicNameInvalid = 0x90,
        /// 0x91: the packet identifier is already in use.
        PacketIdentifierInUse = 0x91,
        /// 0x97: an implementation or administrative quota is exceeded.
        QuotaExceeded = 0x97,
        /// 0x99: the payload does not match its Payload Format Indicator.
        PayloadFormatInvalid = 0x99,
    }
}

reason_codes! {
    /// Reason codes of PUBREL and PUBCOMP (§3.6.2.1, §3.7.2.1).
    PubRelReasonCode {
        /// 0x00: the message is released / the flow is complete.
        Success = 0x00,
        /// 0x92: the packet identifier is not known.
        PacketIdentifierNotFound = 0x92,
    }
}

reason_codes! {
    /// Reason codes of SUBACK, one per topic filter (§3.9.3).
    SubAckReasonCode {
        /// 0x00: subscribed with maximum QoS 0.
        GrantedQos0 = 0x00,
        /// 0x01: subscribed with maximum QoS 1.
        GrantedQos1 = 0x01,
        /// 0x02: subscribed with maximum QoS 2.
        GrantedQos2 = 0x02,
        /// 0x80: not subscribed, no reason given (the only failure code of MQTT 3.1.1).
        UnspecifiedError = 0x80,
        /// 0x83: valid, but not accepted by this server.
        ImplementationSpecificError = 0x83,
        /// 0x87: the client may not make this subscription.
        NotAuthorized = 0x87,
        /// 0x8F: the topic filter is well formed but not accepted.
        TopicFilterInvalid = 0x8F,
        /// 0x91: the packet identifier is already in use.
        PacketIdentifierInUse = 0x91,
        /// 0x97: an implementation or administrative quota is exceeded.
        QuotaExceeded = 0x97,
        /// 0x9E: shared subscriptions are not supported.
        SharedSubscriptionsNotSupported = 0x9E,
        /// 0xA1: subscription identifiers are not supported.
        SubscriptionIdentifiersNotSupported = 0xA1,
        /// 0xA2: wildcard subscriptions are not supported.
        WildcardSubscriptionsNotSupported = 0xA2,
    }
}

impl SubAckReasonCode {
    /// The success code that grants `qos`.
    pub const fn granted(qos: crate::QoS) -> Self {
        match qos {
            crate::QoS::AtMostOnce => Self::GrantedQos0,
            crate::QoS::AtLeastOnce => Self::GrantedQos1,
            crate::QoS::ExactlyOnce => Self::GrantedQos2,
        }
    }
}

reason_codes! {
    /// Reason codes of UNSUBACK, one per topic filter (§3.11.3).
    UnsubAckReasonCode {
        /// 0x00: the subscription is deleted.
        Success = 0x00,
        /// 0x11: no matching subscription existed.
        NoSubscriptionExisted = 0x11,
        /// 0x80: not unsubscribed, no reason given.
        UnspecifiedError = 0x80,
        /// 0x83: valid, but not accepted by this server.
        ImplementationSpecificError = 0x83,
        /// 0x87: the client may not unsubscribe.
        NotAuthorized = 0x87,
        /// 0x8F: the topic filter is well formed but not accepted.
        TopicFilterInvalid = 0x8F,
        /// 0x91: the packet identifier is already in use.
        PacketIdentifierInUse = 0x91,
    }
}

reason_codes! {
    /// Reason codes of DISCONNECT (§3.14.2.1).
    DisconnectReasonCode {
        /// 0x00: close normally; do not send the Will.
        NormalDisconnection = 0x00,
        /// 0x04: close, and send the Will (from a client only).
        DisconnectWithWillMessage = 0x04,
        /// 0x80: no reason given.
        UnspecifiedError = 0x80,
        /// 0x81: a received packet could not be parsed.
        MalformedPacket = 0x81,
        /// 0x82: a received packet broke the specification.
        ProtocolError = 0x82,
        /// 0x83: valid, but not accepted by this implementation.
        ImplementationSpecificError = 0x83,
        /// 0x87: the request is not authorized.
        NotAuthorized = 0x87,
        /// 0x89: the server is busy.
        ServerBusy = 0x89,
        /// 0x8B: the server is shutting down.
        ServerShuttingDown = 0x8B,
        /// 0x8C: the authentication method is not supported.
        BadAuthenticationMethod = 0x8C,
        /// 0x8D: nothing was received for 1.5 times the keep alive.
        KeepAliveTimeout = 0x8D,
        /// 0x8E: another connection with the same client identifier took the session over.
        SessionTakenOver = 0x8E,
        /// 0x8F: a topic filter is well formed but not accepted.
        TopicFilterInvalid = 0x8F,
        /// 0x90: a topic name is well formed but not accepted.
        TopicNameInvalid = 0x90,
        /// 0x93: more QoS 1/2 publications in flight than the Receive Maximum.
        ReceiveMaximumExceeded = 0x93,
        /// 0x94: a topic alias is 0 or above the Topic Alias Maximum, or unknown.
        TopicAliasInvalid = 0x94,
        /// 0x95: a packet exceeded the Maximum Packet Size.
        PacketTooLarge = 0x95,
        /// 0x96: the data rate is too high.
        MessageRateTooHigh = 0x96,
        /// 0x97: an implementation or administrative quota is exceeded.
        QuotaExceeded = 0x97,
        /// 0x98: closed by an administrative action.
        AdministrativeAction = 0x98,
        /// 0x99: a payload does not match its Payload Format Indicator.
        PayloadFormatInvalid = 0x99,
        /// 0x9A: retained messages are not supported.
        RetainNotSupported = 0x9A,
        /// 0x9B: a QoS above the Maximum QoS was used.
        QosNotSupported = 0x9B,
        /// 0x9C: use another server, temporarily.
        UseAnotherServer = 0x9C,
        /// 0x9D: use another server, permanently.
        ServerMoved = 0x9D,
        /// 0x9E: shared subscriptions are not supported.
        SharedSubscriptionsNotSupported = 0x9E,
        /// 0x9F: the connection rate limit is exceeded.
        ConnectionRateExceeded = 0x9F,
        /// 0xA0: the maximum connection time is over.
        MaximumConnectTime = 0xA0,
        /// 0xA1: subscription identifiers are not supported.
        SubscriptionIdentifiersNotSupported = 0xA1,
        /// 0xA2: wildcard subscriptions are not supported.
        WildcardSubscriptionsNotSupported = 0xA2,
    }
}

reason_codes! {
    /// Reason codes of AUTH (§3.15.2.1).
    AuthReasonCode {
        /// 0x00: authentication succeeded.
        Success = 0x00,
        /// 0x18: continue the authentication with another step.
        ContinueAuthentication = 0x18,
        /// 0x19: start a re-authentication (from a client only).
        ReAuthenticate = 0x19,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_family<R: ReasonCode>() {
        for &code in R::ALL {
            assert_eq!(R::from_u8(code.into()), Some(code));
        }
        let known: Vec<u8> = R::ALL.iter().map(|&c| c.into()).collect();
        for value in 0..=u8::MAX {
            assert_eq!(
                R::from_u8(value).is_some(),
                known.contains(&value),
                "{value:#x}"
            );
        }
        assert_eq!(R::SUCCESS.into(), 0);
        assert!(!R::SUCCESS.is_error());
    }

    #[test]
    fn every_family_round_trips_and_rejects_unknown_codes() {
        check_family::<ConnectReasonCode>();
        check_family::<PubAckReasonCode>();
        check_family::<PubRelReasonCode>();
        check_family::<SubAckReasonCode>();
        check_family::<UnsubAckReasonCode>();
        check_family::<DisconnectReasonCode>();
        check_family::<AuthReasonCode>();
    }

    #[test]
    fn v3_return_codes_map_both_ways() {
        for rc in 0..=5 {
            let code = ConnectReasonCode::from_v3_return_code(rc).expect("0..=5 are defined");
            assert_eq!(code.to_v3_return_code(), rc);
        }
        assert_eq!(ConnectReasonCode::from_v3_return_code(6), None);
        assert_eq!(ConnectReasonCode::Banned.to_v3_return_code(), 5);
    }
}
