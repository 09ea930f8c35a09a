//! The identity of a client certificate, for `use_identity_as_username`: the subject's
//! common name, or the first DNS name or e-mail address among its subject alternative
//! names. rustls has already verified the certificate; this only reads two fields, with a
//! small DER walker that refuses anything it does not understand rather than guessing.

use crate::config::IdentitySource;

/// The OID of the common name attribute (2.5.4.3).
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// The OID of the subject alternative name extension (2.5.29.17).
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const INTEGER: u8 = 0x02;
const EXPLICIT_0: u8 = 0xa0;
const EXPLICIT_3: u8 = 0xa3;
const SAN_EMAIL: u8 = 0x81;
const SAN_DNS: u8 = 0x82;

/// The identity of the DER certificate `der`, read from `source`; `None` when the field is
/// absent or not a UTF-8 string.
pub(crate) fn identity(der: &[u8], source: IdentitySource) -> Option<String> {
    let (tag, certificate, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    let (mut tag, mut field, mut after) = tlv(rest)?;
    if tag == EXPLICIT_0 {
        rest = after;
        (tag, field, after) = tlv(rest)?;
    }
    // serial, signature algorithm, issuer, validity, subject.
    if tag != INTEGER {
        return None;
    }
    let _ = field;
    rest = after;
    let mut subject = &[][..];
    for index in 0..4 {
        let (tag, content, next) = tlv(rest)?;
        if tag != SEQUENCE {
            return None;
        }
        if index == 3 {
            subject = content;
        }
        rest = next;
    }
    match source {
        IdentitySource::CommonName => common_name(subject),
        IdentitySource::SubjectAltName => {
            // subjectPublicKeyInfo, then optional unique ids, then [3] extensions.
            while !rest.is_empty() {
                let (tag, content, next) = tlv(rest)?;
                if tag == EXPLICIT_3 {
                    return alt_name(content);
                }
                rest = next;
            }
            None
        }
    }
}

/// The first common name in a Name (SEQUENCE OF SET OF AttributeTypeAndValue).
fn common_name(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let (tag, set, next) = tlv(name)?;
        if tag != SET {
            return None;
        }
        let mut attributes = set;
        while !attributes.is_empty() {
            let (tag, attribute, more) = tlv(attributes)?;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = tlv(attribute)?;
            if tag == OID && oid == OID_COMMON_NAME {
                let (_, text, _) = tlv(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
            attributes = more;
        }
        name = next;
    }
    None
}

/// The first DNS name or e-mail address of the subject alternative name extension.
fn alt_name(extensions: &[u8]) -> Option<String> {
    let (tag, mut list, _) = tlv(extensions)?;
    if tag != SEQUENCE {
        return None;
    }
    while !list.is_empty() {
        let (tag, extension, next) = tlv(list)?;
        if tag != SEQUENCE {
            return None;
        }
        let (tag, oid, mut rest) = tlv(extension)?;
        if tag == OID && oid == OID_SUBJECT_ALT_NAME {
            let (mut tag, mut value, after) = tlv(rest)?;
            if tag == BOOLEAN {
                rest = after;
                (tag, value, _) = tlv(rest)?;
            }
            if tag != OCTET_STRING {
                return None;
            }
            let (tag, mut names, _) = tlv(value)?;
            if tag != SEQUENCE {
                return None;
            }
            while !names.is_empty() {
                let (tag, name, more) = tlv(names)?;
                if tag == SAN_DNS || tag == SAN_EMAIL {
                    return String::from_utf8(name.to_vec()).ok();
                }
                names = more;
            }
            return None;
        }
        list = next;
    }
    None
}

/// One DER element: its tag, its content and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let (bytes, after) = rest.split_at(octets);
        rest = after;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (content, after) = rest.split_at(len);
    Some((tag, content, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(cn: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "shoal tests");
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params
            .self_signed(&key)
            .expect("certificate")
            .der()
            .to_vec()
    }

    #[test]
    fn reads_the_common_name_and_the_first_alt_name() {
        let der = certificate(Some("device-42"), &["dev42.example", "other.example"]);
        assert_eq!(
            identity(&der, IdentitySource::CommonName).as_deref(),
            Some("device-42")
        );
        assert_eq!(
            identity(&der, IdentitySource::SubjectAltName).as_deref(),
            Some("dev42.example")
        );
    }

    #[test]
    fn absent_fields_and_garbage_give_none() {
        let der = certificate(None, &[]);
        assert_eq!(identity(&der, IdentitySource::CommonName), None);
        assert_eq!(identity(&der, IdentitySource::SubjectAltName), None);
        for garbage in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x02, 0x01, 0x00],
        ] {
            assert_eq!(identity(garbage, IdentitySource::CommonName), None);
        }
        // Every truncation of a real certificate is refused without a panic.
        let der = certificate(Some("x"), &["y"]);
        for cut in 0..der.len() {
            let _ = identity(&der[..cut], IdentitySource::SubjectAltName);
            let _ = identity(&der[..cut], IdentitySource::CommonName);
        }
    }
}
