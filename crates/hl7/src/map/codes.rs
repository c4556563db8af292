//! Code tables: HL7 and NHS Data Dictionary codes onto Baton's enums. The
//! raw codes travel beside the enums where the contract keeps them
//! (`disposition_code`, `destination_code`), so nothing is lost when a code
//! has no close match. See docs/hl7.md for the tables as a reader's list.

use baton_proto::events::v1::{
    AdministrativeSex, AdmissionMethod, DischargeDestination, DischargeMethod, NhsNumberStatus,
    PatientClass, ReferralPriority,
};

/// PV1-2 (HL7 table 0004), with `D` for a day case as NHS feeds send it.
/// `None` for a code not in the table.
pub(super) fn patient_class(code: &str) -> Option<PatientClass> {
    Some(match code.to_ascii_uppercase().as_str() {
        "" => PatientClass::Unspecified,
        "I" => PatientClass::Inpatient,
        "O" => PatientClass::Outpatient,
        "E" => PatientClass::Emergency,
        "D" => PatientClass::DayCase,
        "B" => PatientClass::Maternity,
        "P" | "R" | "C" | "N" | "U" => PatientClass::Other,
        _ => return None,
    })
}

/// PV1-4: the NHS Data Dictionary admission method (two digits: 11–13
/// elective, 21–2D emergency, 31–32 maternity, 81 transfer, 82–83 other),
/// else HL7 table 0007 (E, U, A, T emergency; R, C elective; L, N
/// maternity).
pub(super) fn admission_method(code: &str) -> Option<AdmissionMethod> {
    let code = code.to_ascii_uppercase();
    Some(match code.as_str() {
        "" => AdmissionMethod::Unspecified,
        "11" | "12" | "13" | "R" | "C" => AdmissionMethod::Elective,
        "31" | "32" | "L" | "N" | "B" => AdmissionMethod::Maternity,
        "81" => AdmissionMethod::Transfer,
        "82" | "83" | "99" => AdmissionMethod::Other,
        "E" | "U" | "A" | "T" => AdmissionMethod::Emergency,
        c if c.len() == 2 && c.starts_with('2') => AdmissionMethod::Emergency,
        _ => return None,
    })
}

/// PV1-36. One digit: the NHS Data Dictionary discharge method (1 clinical
/// advice, 2 self or relative, 3 tribunal or court, 4 died, 5 stillbirth,
/// 8/9 not applicable/known). Two digits: HL7 table 0112 (07 against
/// medical advice, 20 and 40–42 expired, other 0x/ 6x discharges on
/// advice).
pub(super) fn discharge_method(code: &str) -> Option<DischargeMethod> {
    Some(match code {
        "" | "8" | "9" => DischargeMethod::Unspecified,
        "1" => DischargeMethod::ClinicalAdvice,
        "2" | "07" => DischargeMethod::SelfDischarge,
        "3" => DischargeMethod::Legal,
        "4" | "5" | "20" | "40" | "41" | "42" => DischargeMethod::Died,
        c if c.len() == 2 && c.bytes().all(|b| b.is_ascii_digit()) => {
            DischargeMethod::ClinicalAdvice
        }
        _ => return None,
    })
}

/// PV1-37.1: the NHS Data Dictionary discharge destination.
pub(super) fn discharge_destination(code: &str) -> Option<DischargeDestination> {
    Some(match code.to_ascii_uppercase().as_str() {
        "" | "98" | "99" => DischargeDestination::Unspecified,
        "19" => DischargeDestination::Home,
        "29" => DischargeDestination::TemporaryResidence,
        "54" | "65" | "85" => DischargeDestination::CareHome,
        "49" | "50" | "51" | "52" | "53" | "84" | "87" => DischargeDestination::OtherHospital,
        "88" => DischargeDestination::Hospice,
        "79" => DischargeDestination::Mortuary,
        "30" | "37" | "38" | "48" | "66" => DischargeDestination::Other,
        // Local codes that NHS feeds use for what the Data Dictionary lacks.
        "VW" | "VIRTUAL-WARD" => DischargeDestination::VirtualWard,
        "CH" | "COMMUNITY-HOSPITAL" => DischargeDestination::CommunityHospital,
        _ => return None,
    })
}

/// PID-8 (HL7 table 0001).
pub(super) fn sex(code: &str) -> Option<AdministrativeSex> {
    Some(match code.to_ascii_uppercase().as_str() {
        "" => AdministrativeSex::Unspecified,
        "F" => AdministrativeSex::Female,
        "M" => AdministrativeSex::Male,
        "O" | "A" | "N" | "X" => AdministrativeSex::Other,
        "U" => AdministrativeSex::Unknown,
        _ => return None,
    })
}

/// PID-32 carrying the NHS number status indicator (01–08), as NHS
/// feeds send it.
pub(super) fn nhs_number_status(code: &str) -> NhsNumberStatus {
    match code {
        "01" => NhsNumberStatus::Verified,
        "02" => NhsNumberStatus::NotTraced,
        "03" => NhsNumberStatus::TraceRequired,
        "04" => NhsNumberStatus::NoMatch,
        "05" => NhsNumberStatus::NeedsResolution,
        "06" => NhsNumberStatus::TraceInProgress,
        "07" => NhsNumberStatus::NotPresent,
        "08" => NhsNumberStatus::TracePostponed,
        _ => NhsNumberStatus::Unspecified,
    }
}

/// RF1-2 (HL7 table 0280: S stat, A asap, R routine), with the NHS e-RS
/// words and the two-week-wait cancer pathway.
pub(super) fn referral_priority(code: &str) -> Option<ReferralPriority> {
    Some(match code.to_ascii_uppercase().as_str() {
        "" => ReferralPriority::Unspecified,
        "R" | "ROUTINE" => ReferralPriority::Routine,
        "A" | "U" | "URGENT" | "2WW" => ReferralPriority::Urgent,
        "S" | "STAT" | "E" | "EMERGENCY" => ReferralPriority::Emergency,
        _ => return None,
    })
}

/// An ODS code as Baton's validation accepts it: 3 to 10 capital letters
/// and digits.
pub(super) fn is_ods_code(code: &str) -> bool {
    (3..=10).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_and_hl7_codes_map_and_unknown_ones_do_not() {
        assert_eq!(patient_class("i"), Some(PatientClass::Inpatient));
        assert_eq!(patient_class("Z"), None);
        assert_eq!(admission_method("21"), Some(AdmissionMethod::Emergency));
        assert_eq!(admission_method("2D"), Some(AdmissionMethod::Emergency));
        assert_eq!(admission_method("11"), Some(AdmissionMethod::Elective));
        assert_eq!(admission_method("R"), Some(AdmissionMethod::Elective));
        assert_eq!(admission_method("77"), None);
        assert_eq!(discharge_method("1"), Some(DischargeMethod::ClinicalAdvice));
        assert_eq!(discharge_method("4"), Some(DischargeMethod::Died));
        assert_eq!(discharge_method("07"), Some(DischargeMethod::SelfDischarge));
        assert_eq!(discharge_method("20"), Some(DischargeMethod::Died));
        assert_eq!(
            discharge_method("01"),
            Some(DischargeMethod::ClinicalAdvice)
        );
        assert_eq!(discharge_method("home"), None);
        assert_eq!(
            discharge_destination("19"),
            Some(DischargeDestination::Home)
        );
        assert_eq!(
            discharge_destination("54"),
            Some(DischargeDestination::CareHome)
        );
        assert_eq!(
            discharge_destination("79"),
            Some(DischargeDestination::Mortuary)
        );
        assert_eq!(
            discharge_destination("vw"),
            Some(DischargeDestination::VirtualWard)
        );
        assert_eq!(discharge_destination("Nursing home"), None);
        assert_eq!(sex("f"), Some(AdministrativeSex::Female));
        assert_eq!(nhs_number_status("01"), NhsNumberStatus::Verified);
        assert_eq!(nhs_number_status("N"), NhsNumberStatus::Unspecified);
        assert_eq!(referral_priority("A"), Some(ReferralPriority::Urgent));
        assert_eq!(referral_priority("S"), Some(ReferralPriority::Emergency));
        assert!(is_ods_code("RXX") && is_ods_code("M85011"));
        assert!(!is_ods_code("GHHSFacility") && !is_ods_code("RX"));
    }
}
