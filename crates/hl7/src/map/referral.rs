//! REF triggers: a referral requested (I12), modified (I13: its RF1-1
//! status says accepted, rejected, cancelled or completed) and cancelled
//! (I14).

use baton_proto::events::v1::care_event::Payload;
use baton_proto::events::v1::{
    Coding, ReferralAccepted, ReferralCancelled, ReferralCompleted, ReferralRejected,
    ReferralRequested, Service,
};

use super::{Envelope, Mapper, codes, name};
use crate::Segment;
use crate::problem::{ErrorCode, Location};

/// Maps a REF message; false when Baton does not take `trigger`.
pub(super) fn map(mapper: &mut Mapper<'_>, trigger: &str) -> bool {
    if !matches!(trigger, "I12" | "I13" | "I14") {
        return false;
    }
    let pid = mapper.require("PID", "the patient");
    let rf1 = mapper.require("RF1", "the referral: RF1-6 referral id, RF1-1 status");
    let (Some(pid), Some(rf1)) = (pid, rf1) else {
        return true;
    };
    let envelope = mapper.envelope(pid, 1, None);
    let referral_id = mapper.value(rf1, 6).first().into_owned();
    let status = mapper.value(rf1, 1).first().to_ascii_uppercase();
    let reason = mapper.value(rf1, 10).component(2).text().into_owned();
    let reason = if reason.is_empty() {
        mapper.value(rf1, 10).first().into_owned()
    } else {
        reason
    };
    let id_source =
        |payload: &str| vec![(format!("{payload}.referral_id"), Location::field("RF1", 6))];
    match (trigger, status.as_str()) {
        ("I12", _) | ("I13", "P" | "") => requested(mapper, rf1, &envelope, referral_id),
        ("I13", "A") => mapper.push(
            &envelope,
            None,
            Payload::ReferralAccepted(ReferralAccepted { referral_id }),
            id_source("referral_accepted"),
        ),
        ("I13", "R") => mapper.push(
            &envelope,
            None,
            Payload::ReferralRejected(ReferralRejected { referral_id, reason }),
            id_source("referral_rejected"),
        ),
        ("I13", "E") => mapper.push(
            &envelope,
            None,
            Payload::ReferralCompleted(ReferralCompleted { referral_id }),
            id_source("referral_completed"),
        ),
        ("I13", "C") | ("I14", _) => mapper.push(
            &envelope,
            None,
            Payload::ReferralCancelled(ReferralCancelled { referral_id, reason }),
            id_source("referral_cancelled"),
        ),
        (_, other) => mapper.error(
            Location::field("RF1", 1),
            ErrorCode::TableValueNotFound,
            format!("referral status {other:?} of REF^I13: expected A (accepted), R (rejected), C (cancelled), E (completed) or P (pending: details changed)"),
        ),
    }
    true
}

/// I12 (and I13 with status pending: the details changed). The service
/// referred to is the PRD segment with provider role RT (referred to):
/// its identifier (PRD-7) and name (PRD-2 person, else PRD-4 facility);
/// without one, the referral type RF1-3.
fn requested<'m>(
    mapper: &mut Mapper<'m>,
    rf1: &'m Segment,
    envelope: &Envelope,
    referral_id: String,
) {
    let (priority, _) = mapper.coded(
        rf1,
        2,
        codes::referral_priority,
        "referral priority (RF1-2)",
    );
    let mut sources = vec![
        (
            "referral_requested.referral_id".to_owned(),
            Location::field("RF1", 6),
        ),
        (
            "referral_requested.priority".to_owned(),
            Location::field("RF1", 2),
        ),
    ];
    let referred_to = mapper
        .all("PRD")
        .into_iter()
        .find(|(_, prd)| mapper.value(prd, 1).first().eq_ignore_ascii_case("RT"));
    let service = match referred_to {
        Some((sequence, prd)) => {
            sources.push((
                "referral_requested.service".to_owned(),
                Location::nth("PRD", sequence, 7),
            ));
            let name = name(mapper.value(prd, 2));
            let facility = mapper.value(prd, 4).component(4).first().into_owned();
            let name = if name.is_empty() { facility } else { name };
            Service {
                code: mapper.value(prd, 7).first().into_owned(),
                name,
                organisation: String::new(),
            }
        }
        None => {
            sources.push((
                "referral_requested.service".to_owned(),
                Location::field("RF1", 3),
            ));
            let kind = mapper.value(rf1, 3);
            Service {
                code: kind.first().into_owned(),
                name: kind.component(2).text().into_owned(),
                organisation: String::new(),
            }
        }
    };
    let reason = mapper.value(rf1, 10);
    let reason = (!reason.is_empty()).then(|| Coding {
        system: reason.component(3).text().into_owned(),
        code: reason.first().into_owned(),
        display: reason.component(2).text().into_owned(),
    });
    let referring_organisation = mapper.source.organisation.clone();
    let payload = Payload::ReferralRequested(ReferralRequested {
        referral_id,
        service: Some(service),
        priority: priority as i32,
        reason,
        referring_organisation,
        respond_by: None,
        original_referral_id: mapper.value(rf1, 11).first().into_owned(),
    });
    mapper.push(envelope, None, payload, sources);
}
