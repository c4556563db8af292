//! One person's journey through care, as the events their providers' systems
//! would send: registration, hospital stays with their moves and
//! corrections, the virtual ward or another destination, follow-up at home,
//! readmissions and deaths.
//!
//! A journey is written as drafts in clinical order, then each draft is
//! given the time its source recorded it: a few seconds after it happened,
//! or for a share of them minutes to hours later. The journey comes out in
//! recorded order, as a feed delivers it. Drafts that only make sense once
//! an earlier one is known (a cancellation, a discharge date naming the
//! visit) are never recorded before it, so folding the feed in its own
//! order never meets a reference to something it has not seen.

use std::cell::RefCell;
use std::collections::VecDeque;

use baton_proto::events::v1::{
    AdministrativeSex, AdmissionCancelled, AdmissionMethod, Admitted, CareEvent, CarePlanChanged,
    CarePlanStatus, CareTeamMember, CareTeamMemberAssigned, CareTeamMemberRemoved, Coding,
    Demographics, DetailsUpdated, Died, DischargeCancelled, DischargeDestination, DischargeMethod,
    Discharged, EpisodeEndReason, EpisodeEnded, EpisodeStarted, EpisodeType,
    ExpectedDischargeDateSet, FrailtyAssessed, Goal, Intervention, LeaveEnded, LeaveStarted,
    LocalIdentifier, Location, MedicallyOptimised, MedicallyOptimisedRevoked, NhsNumberStatus,
    Pathway, PatientClass, PatientClassChanged, PatientIdentity, PreAdmitted, ReferralAccepted,
    ReferralCancelled, ReferralCompleted, ReferralPriority, ReferralRejected, ReferralRequested,
    Registered, Service, Source, TransferCancelled, Transferred, care_event::Payload,
};
use prost_types::Timestamp;
use rand::distr::uniform::{SampleRange, SampleUniform};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use uuid::Uuid;

use crate::PopulationConfig;
use crate::calendar::{DAY, HOUR, MINUTE, date_of, in_working_hours};
use crate::catalogue::{
    ADMISSIONS_UNIT, ADMISSIONS_UNIT_NURSES, ASSESSORS, BASE_WARDS, CARE_HOMES,
    COMMUNITY_HOSPITALS, COMMUNITY_TRUST, CONSULTANTS, DETERIORATIONS, DISTRICT_NURSES,
    ELECTIVE_WARDS, FACILITY, FAMILY_NAMES, FEMALE_NAMES, GP_PRACTICES, LOCAL_CODES, MALE_NAMES,
    POSTCODE_DISTRICTS, POSTCODE_LETTERS, REJECTION_REASONS, SPINE, THERAPISTS,
    VIRTUAL_WARD_NURSES, WARD_NURSES, WITHDRAWAL_REASONS,
};
use crate::nhs::nhs_number;

/// Hospital stays a journey may hold: the first and up to two readmissions.
const MAX_STAYS: u32 = 3;

/// The earliest moment patient `patient`'s journey can start: journeys
/// start in patient order, `arrivals_per_day` a day, each at a random
/// moment of its own slot.
pub(crate) fn arrival_floor(config: &PopulationConfig, patient: u64) -> i64 {
    let patient = i64::try_from(patient).expect("patients are counted in usize");
    config.start_unix_seconds + patient * arrival_slot(config)
}

pub(crate) fn arrival_slot(config: &PopulationConfig) -> i64 {
    (DAY / i64::from(config.arrivals_per_day)).max(1)
}

/// The events of patient `patient`'s journey, in recorded order.
pub(crate) fn journey(config: &PopulationConfig, patient: u64) -> VecDeque<CareEvent> {
    let mut journey = Journey::new(config, patient);
    journey.live();
    journey.into_events()
}

/// A seed of its own for every patient, so a journey depends only on the
/// population seed and the patient's number.
fn patient_seed(seed: u64, patient: u64) -> u64 {
    let mut z = seed ^ patient.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A name-based id, the same for the same population, patient and name.
fn synthetic_uuid(kind: &[u8], seed: u64, patient: u64, number: u64) -> Uuid {
    let mut name = Vec::with_capacity(40);
    name.extend_from_slice(b"baton-synth/");
    name.extend_from_slice(kind);
    name.extend_from_slice(&seed.to_be_bytes());
    name.extend_from_slice(&patient.to_be_bytes());
    name.extend_from_slice(&number.to_be_bytes());
    Uuid::new_v5(&baton_care::BATON_NAMESPACE, &name)
}

/// The system a draft comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    /// The hospital's patient administration system: ADT.
    Pas,
    /// The hospital's electronic patient record: assessments, plans, teams.
    Epr,
    /// The referral management system.
    Referrals,
    /// The virtual-ward platform.
    VirtualWard,
    /// The community trust's record.
    Community,
    /// The national spine (PDS): demographics and deaths from outside.
    Spine,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Pas => "PAS",
            System::Epr => "EPR",
            System::Referrals => "REFERRALS",
            System::VirtualWard => "VW-PLATFORM",
            System::Community => "COMMUNITY-EPR",
            System::Spine => "PDS",
        }
    }
}

/// An event before it is given a recorded time and an id.
#[derive(Debug)]
struct Draft {
    occurred: i64,
    system: System,
    encounter_id: String,
    correlation_id: String,
    /// The draft that caused this one.
    caused_by: Option<usize>,
    /// A draft this one must not be recorded before: the admission whose
    /// visit it names, the movement it cancels.
    recorded_after: Option<usize>,
    /// Never recorded late: registrations, and movements a correction may
    /// cancel without naming them (a late one could be taken for another).
    on_time: bool,
    /// Boxed: the largest payload is big, and drafts are shuffled into
    /// recorded order.
    payload: Box<Payload>,
}

impl Draft {
    fn in_encounter(&mut self, encounter_id: &str) -> &mut Self {
        encounter_id.clone_into(&mut self.encounter_id);
        self
    }

    fn caused_by(&mut self, draft: usize) -> &mut Self {
        self.caused_by = Some(draft);
        self
    }

    fn recorded_after(&mut self, draft: usize) -> &mut Self {
        self.recorded_after = Some(draft);
        self
    }

    fn on_time(&mut self) -> &mut Self {
        self.on_time = true;
        self
    }
}

/// How a hospital stay begins.
#[derive(Debug)]
enum Route {
    Emergency,
    /// Booked ahead: a pre-admission, then the admission on the day.
    Elective,
    /// Escalated from a virtual ward, whose episode ends as readmitted.
    FromVirtualWard {
        episode_id: String,
        nurse: &'static str,
    },
}

/// Where a stay ends, chosen when it begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    StillInHospital,
    DiedInHospital,
    Discharged(Destination),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    VirtualWard,
    Home,
    SelfDischarge,
    CareHome,
    CommunityHospital,
}

/// How a stay ended.
#[derive(Debug)]
enum StayEnd {
    /// The admission was entered in error and the patient went home from ED.
    NotAdmitted,
    StillInHospital,
    Died,
    Left {
        destination: Destination,
        at: i64,
        discharge: usize,
    },
}

/// How a virtual-ward episode ended.
#[derive(Debug)]
enum VirtualWardEnd {
    Finished,
    Readmitted {
        at: i64,
        episode_id: String,
        nurse: &'static str,
    },
}

/// How the frailty service answers a referral.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Accepted,
    Rejected,
    Withdrawn,
    /// Not yet: the referral stays open.
    Pending,
}

/// How a virtual-ward stay goes.
#[derive(Debug, Clone, Copy)]
enum Stay {
    Completed,
    Readmitted,
    /// Still on the virtual ward as the feed ends.
    Ongoing,
    Died,
}

/// The patient's referral to the frailty service, while it may still move on.
#[derive(Debug)]
struct FrailtyReferral {
    referral_id: String,
    accepted: bool,
}

struct Journey<'a> {
    config: &'a PopulationConfig,
    patient: u64,
    /// In a cell so that drawing takes `&self` and a draw can sit in the
    /// arguments of a drafting call.
    rng: RefCell<Xoshiro256PlusPlus>,
    identity: PatientIdentity,
    drafts: Vec<Draft>,
    /// Visits opened, numbering the encounter ids.
    encounters: u64,
    stays: u32,
    correlation_id: String,
    /// Version of the care plan, once there is one.
    care_plan_version: Option<u32>,
    referrals: u32,
    episodes: u32,
    frailty_referral: Option<FrailtyReferral>,
    /// The person's Clinical Frailty Scale, drifting between assessments.
    frailty: u32,
}

impl<'a> Journey<'a> {
    fn new(config: &'a PopulationConfig, patient: u64) -> Self {
        let identity = PatientIdentity {
            nhs_number: nhs_number(patient),
            nhs_number_status: NhsNumberStatus::Verified as i32,
            local_ids: vec![LocalIdentifier {
                authority: config.organisation.clone(),
                value: format!("H{patient:07}"),
            }],
        };
        Self {
            config,
            patient,
            rng: RefCell::new(Xoshiro256PlusPlus::seed_from_u64(patient_seed(
                config.seed,
                patient,
            ))),
            identity,
            drafts: Vec::with_capacity(48),
            encounters: 0,
            stays: 0,
            correlation_id: String::new(),
            care_plan_version: None,
            referrals: 0,
            episodes: 0,
            frailty_referral: None,
            frailty: 1,
        }
    }

    fn organisation(&self) -> &str {
        &self.config.organisation
    }

    // ---- drawing ----------------------------------------------------------

    fn draw<T: SampleUniform, R: SampleRange<T>>(&self, range: R) -> T {
        self.rng.borrow_mut().random_range(range)
    }

    fn ratio(&self, numerator: u32, denominator: u32) -> bool {
        self.rng.borrow_mut().random_ratio(numerator, denominator)
    }

    fn chance(&self, percent: u32) -> bool {
        self.ratio(percent, 100)
    }

    /// The first working-hours moment from `at`; see [`in_working_hours`].
    fn working_hours(&self, at: i64, from_hour: i64, to_hour: i64) -> i64 {
        in_working_hours(&mut *self.rng.borrow_mut(), at, from_hour, to_hour)
    }

    /// A time between `from` and `until` (exclusive), or `from` when the
    /// window is empty.
    fn between(&self, from: i64, until: i64) -> i64 {
        if until > from {
            self.draw(from..until)
        } else {
            from
        }
    }

    fn pick<T: Copy>(&self, items: &[T]) -> T {
        items[self.draw(0..items.len())]
    }

    fn weighted<T: Copy>(&self, choices: &[(T, u32)]) -> T {
        let total: u32 = choices.iter().map(|(_, weight)| weight).sum();
        let mut draw = self.draw(0..total);
        for &(choice, weight) in choices {
            if draw < weight {
                return choice;
            }
            draw -= weight;
        }
        unreachable!("the draw is below the total weight")
    }

    // ---- drafting ---------------------------------------------------------

    /// Adds a draft in the current correlation; returns it for refinement.
    fn draft(&mut self, occurred: i64, system: System, payload: Payload) -> &mut Draft {
        self.drafts.push(Draft {
            occurred,
            system,
            encounter_id: String::new(),
            correlation_id: self.correlation_id.clone(),
            caused_by: None,
            recorded_after: None,
            on_time: false,
            payload: Box::new(payload),
        });
        self.drafts.last_mut().expect("just pushed")
    }

    /// The number the next draft will have.
    fn next_draft(&self) -> usize {
        self.drafts.len()
    }

    fn event_id(&self, draft: usize) -> String {
        let number = u64::try_from(draft).expect("drafts fit in u64");
        synthetic_uuid(b"event", self.config.seed, self.patient, number).to_string()
    }

    /// The latest clinical time drafted so far.
    fn latest(&self) -> i64 {
        self.drafts.iter().map(|d| d.occurred).max().unwrap_or(0)
    }

    /// A new visit number (HL7 PV1-19); a new stay also starts a new
    /// correlation, which its discharge destination's events share.
    fn open_encounter(&mut self, new_stay: bool) -> String {
        self.encounters += 1;
        if new_stay {
            self.correlation_id = synthetic_uuid(
                b"correlation",
                self.config.seed,
                self.patient,
                self.encounters,
            )
            .to_string();
        }
        // Three stays and a re-keyed admission in each make at most six
        // visits, so the last digit numbers them within the patient.
        debug_assert!(self.encounters < 10, "at most nine visits a journey");
        format!("V{:08}", self.patient * 10 + self.encounters)
    }

    // ---- the journey ------------------------------------------------------

    fn live(&mut self) {
        let arrival =
            arrival_floor(self.config, self.patient) + self.draw(0..arrival_slot(self.config));
        self.register(arrival);
        let mut route = if self.chance(12) {
            Route::Elective
        } else {
            Route::Emergency
        };
        let mut at = arrival + self.between(20 * MINUTE, 4 * HOUR);
        loop {
            let can_readmit = self.stays + 1 < MAX_STAYS;
            let (destination, left_at, discharge) = match self.hospital_stay(at, route) {
                StayEnd::NotAdmitted | StayEnd::StillInHospital | StayEnd::Died => return,
                StayEnd::Left {
                    destination,
                    at,
                    discharge,
                } => (destination, at, discharge),
            };
            match destination {
                Destination::VirtualWard => {
                    match self.virtual_ward(left_at, discharge, can_readmit) {
                        VirtualWardEnd::Finished => return,
                        VirtualWardEnd::Readmitted {
                            at: readmitted_at,
                            episode_id,
                            nurse,
                        } => {
                            at = readmitted_at;
                            route = Route::FromVirtualWard { episode_id, nurse };
                        }
                    }
                }
                Destination::Home | Destination::SelfDischarge => {
                    self.follow_up_at_home(left_at);
                    if can_readmit && self.chance(14) {
                        at = left_at + self.between(3 * DAY, 30 * DAY);
                        route = Route::Emergency;
                        continue;
                    }
                    if self.chance(4) {
                        self.die_in_the_community();
                    }
                    return;
                }
                Destination::CareHome => {
                    self.settle_in_care_home(left_at);
                    return;
                }
                Destination::CommunityHospital => {
                    if let Some(referral) = self.frailty_referral.take() {
                        self.draft(
                            left_at + self.between(HOUR, DAY),
                            System::Referrals,
                            Payload::ReferralCancelled(ReferralCancelled {
                                referral_id: referral.referral_id,
                                reason: "care continues at the community hospital".into(),
                            }),
                        );
                    }
                    return;
                }
            }
        }
    }

    /// Registration with demographics; the person's age sets how frail
    /// they are likely to be.
    fn register(&mut self, at: i64) {
        let age: i64 = if self.chance(85) {
            let band = self.weighted(&[
                ((65, 75), 25),
                ((75, 85), 40),
                ((85, 95), 28),
                ((95, 101), 7),
            ]);
            self.draw(band.0..band.1)
        } else {
            self.draw(40..65)
        };
        let born = at - age * 365 * DAY - age / 4 * DAY - self.draw(0..365 * DAY);
        let female = self.chance(56);
        let given_name = if female {
            self.pick(FEMALE_NAMES)
        } else {
            self.pick(MALE_NAMES)
        };
        let demographics = Demographics {
            family_name: self.pick(FAMILY_NAMES).to_owned(),
            given_name: given_name.to_owned(),
            birth_date: Some(date_of(born)),
            sex: if female {
                AdministrativeSex::Female
            } else {
                AdministrativeSex::Male
            } as i32,
            postcode: self.postcode(),
            gp_practice: self.pick(GP_PRACTICES).to_owned(),
        };
        self.draft(
            at,
            System::Pas,
            Payload::Registered(Registered {
                demographics: Some(demographics),
            }),
        )
        .on_time();
        if self.chance(5) {
            let moved_practice = at + self.between(DAY, 30 * DAY);
            let gp_practice = self.pick(GP_PRACTICES).to_owned();
            self.draft(
                moved_practice,
                System::Spine,
                Payload::DetailsUpdated(DetailsUpdated {
                    demographics: Some(Demographics {
                        gp_practice,
                        ..Default::default()
                    }),
                }),
            );
        }
        self.frailty = match age {
            ..65 => self.weighted(&[
                (1, 10),
                (2, 18),
                (3, 22),
                (4, 20),
                (5, 14),
                (6, 9),
                (7, 5),
                (8, 2),
            ]),
            65..75 => self.weighted(&[
                (1, 3),
                (2, 6),
                (3, 12),
                (4, 18),
                (5, 22),
                (6, 18),
                (7, 13),
                (8, 6),
                (9, 2),
            ]),
            _ => self.weighted(&[
                (1, 1),
                (2, 2),
                (3, 5),
                (4, 10),
                (5, 22),
                (6, 26),
                (7, 22),
                (8, 9),
                (9, 3),
            ]),
        };
    }

    fn postcode(&self) -> String {
        let district = self.pick(POSTCODE_DISTRICTS);
        let sector = self.draw(1..10);
        let first = char::from(self.pick(POSTCODE_LETTERS));
        let second = char::from(self.pick(POSTCODE_LETTERS));
        format!("{district} {sector}{first}{second}")
    }

    fn bed_on(&self, ward: &str) -> Location {
        let (room, bed) = if self.chance(15) {
            let room = self.draw(1..9);
            (format!("SR-{room}"), format!("SR{room}"))
        } else {
            let bay = self.draw(1..7);
            (format!("BAY-{bay}"), format!("B{bay}{}", self.draw(1..7)))
        };
        Location {
            point_of_care: ward.to_owned(),
            room,
            bed,
            facility: FACILITY.to_owned(),
            organisation: self.organisation().to_owned(),
        }
    }

    fn choose_outcome(&self) -> Outcome {
        use Destination::*;
        use Outcome::*;
        if self.stays == 1 {
            self.weighted(&[
                (StillInHospital, 10),
                (DiedInHospital, 4),
                (Discharged(VirtualWard), 34),
                (Discharged(Home), 30),
                (Discharged(SelfDischarge), 2),
                (Discharged(CareHome), 10),
                (Discharged(CommunityHospital), 10),
            ])
        } else {
            self.weighted(&[
                (StillInHospital, 22),
                (DiedInHospital, 10),
                (Discharged(VirtualWard), 10),
                (Discharged(Home), 36),
                (Discharged(SelfDischarge), 2),
                (Discharged(CareHome), 12),
                (Discharged(CommunityHospital), 8),
            ])
        }
    }

    fn length_of_stay(&self, outcome: Outcome) -> i64 {
        let days = match outcome {
            Outcome::Discharged(Destination::VirtualWard) => {
                let band = self.weighted(&[((1, 3), 45), ((3, 7), 45), ((7, 12), 10)]);
                self.draw(band.0..band.1)
            }
            _ => {
                let band =
                    self.weighted(&[((1, 3), 25), ((3, 8), 40), ((8, 16), 25), ((16, 35), 10)]);
                self.draw(band.0..band.1)
            }
        };
        let waiting_for_placement = match outcome {
            Outcome::Discharged(Destination::CareHome | Destination::CommunityHospital) => {
                self.draw(3..10)
            }
            _ => 0,
        };
        (days + waiting_for_placement) * DAY + self.draw(0..DAY)
    }

    fn admitted(
        &mut self,
        at: i64,
        encounter_id: &str,
        location: Location,
        patient_class: PatientClass,
        admission_method: AdmissionMethod,
        clinician: (&str, &str),
    ) -> usize {
        let admission = self.next_draft();
        self.draft(
            at,
            System::Pas,
            Payload::Admitted(Admitted {
                location: Some(location),
                patient_class: patient_class as i32,
                admission_method: admission_method as i32,
                attending_clinician: format!("{} (C{})", clinician.1, clinician.0),
            }),
        )
        .in_encounter(encounter_id);
        admission
    }

    /// One hospital stay, from admission (or pre-admission) to wherever it
    /// ends.
    fn hospital_stay(&mut self, at: i64, route: Route) -> StayEnd {
        self.stays += 1;
        let mut encounter_id = self.open_encounter(true);
        let outcome = self.choose_outcome();
        let elective = matches!(route, Route::Elective);

        let (first_ward, patient_class, admission_method) = if elective {
            let ward = self.pick(ELECTIVE_WARDS);
            (ward, PatientClass::Inpatient, AdmissionMethod::Elective)
        } else if self.chance(30) {
            (
                ADMISSIONS_UNIT,
                PatientClass::Emergency,
                AdmissionMethod::Emergency,
            )
        } else {
            (
                ADMISSIONS_UNIT,
                PatientClass::Inpatient,
                AdmissionMethod::Emergency,
            )
        };
        let mut admitted_at = at;
        if elective {
            let expected = self.working_hours(at + self.between(2 * DAY, 10 * DAY), 7, 9);
            let expected_location = Location {
                point_of_care: first_ward.to_owned(),
                facility: FACILITY.to_owned(),
                organisation: self.organisation().to_owned(),
                ..Default::default()
            };
            self.draft(
                at,
                System::Pas,
                Payload::PreAdmitted(PreAdmitted {
                    expected_location: Some(expected_location),
                    expected_admission_at: Some(timestamp(expected)),
                    patient_class: patient_class as i32,
                    admission_method: admission_method as i32,
                }),
            )
            .in_encounter(&encounter_id);
            admitted_at = expected + self.between(0, 90 * MINUTE);
        }
        let clinician = self.pick(CONSULTANTS);
        let mut location = self.bed_on(first_ward);
        let mut admission = self.admitted(
            admitted_at,
            &encounter_id,
            location.clone(),
            patient_class,
            admission_method,
            clinician,
        );
        let entered_in_error = matches!(route, Route::Emergency) && self.chance(3);
        if let Route::FromVirtualWard { episode_id, nurse } = route {
            let ended = admitted_at + self.between(20 * MINUTE, 2 * HOUR);
            self.draft(
                ended,
                System::VirtualWard,
                Payload::EpisodeEnded(EpisodeEnded {
                    episode_id,
                    reason: EpisodeEndReason::Readmitted as i32,
                }),
            )
            .caused_by(admission);
            self.remove_member(
                ended + self.between(MINUTE, HOUR),
                System::VirtualWard,
                nurse,
            );
        }
        if entered_in_error {
            // The admission was keyed against the wrong visit or should
            // never have been made; the PAS sends A11 for the visit.
            self.drafts[admission].on_time = true;
            let cancelled_at = admitted_at + self.between(20 * MINUTE, 90 * MINUTE);
            let cancelled_event_id = if self.chance(50) {
                self.event_id(admission)
            } else {
                String::new()
            };
            self.draft(
                cancelled_at,
                System::Pas,
                Payload::AdmissionCancelled(AdmissionCancelled { cancelled_event_id }),
            )
            .in_encounter(&encounter_id)
            .caused_by(admission)
            .recorded_after(admission);
            if self.chance(50) {
                // Sent home from the emergency department after all.
                return StayEnd::NotAdmitted;
            }
            if self.chance(50) {
                encounter_id = self.open_encounter(false);
            }
            admitted_at = cancelled_at + self.between(10 * MINUTE, 40 * MINUTE);
            location = self.bed_on(first_ward);
            admission = self.admitted(
                admitted_at,
                &encounter_id,
                location.clone(),
                patient_class,
                admission_method,
                clinician,
            );
        }

        let mut leaves_at = admitted_at + self.length_of_stay(outcome);
        if matches!(outcome, Outcome::Discharged(_)) {
            leaves_at = self.working_hours(leaves_at, 10, 19);
        }
        // In-stay events are placed before this, so they precede the discharge.
        let settled_by = leaves_at - HOUR;

        // The care team.
        self.assign_member(
            admitted_at + self.between(10 * MINUTE, 90 * MINUTE),
            System::Epr,
            &format!("GMC-{}", clinician.0),
            clinician.1,
            "CONSULTANT-GERIATRICIAN",
        );
        let admitting_nurse = (!elective).then(|| self.pick(ADMISSIONS_UNIT_NURSES));
        if let Some((id, name)) = admitting_nurse {
            let assigned = admitted_at + self.between(15 * MINUTE, HOUR);
            self.assign_member(assigned, System::Epr, id, name, "AMU-NURSE");
        }
        if patient_class == PatientClass::Emergency {
            let changed = admitted_at + self.between(2 * HOUR, 8 * HOUR);
            self.draft(
                changed.min(settled_by),
                System::Pas,
                Payload::PatientClassChanged(PatientClassChanged {
                    patient_class: PatientClass::Inpatient as i32,
                    ..Default::default()
                }),
            )
            .in_encounter(&encounter_id);
        }

        // Frailty: assessed within a day, a little different each stay.
        let assessed = self.working_hours(admitted_at + self.between(2 * HOUR, 20 * HOUR), 8, 20);
        if self.stays > 1 {
            self.frailty_drifts();
        }
        self.assess_frailty(assessed.min(settled_by), System::Epr);

        // Moves: off the admissions unit to a base ward, sometimes again.
        let mut ward_nurse = None;
        if !elective {
            let moved = admitted_at + self.between(4 * HOUR, 30 * HOUR);
            if moved < settled_by - 2 * HOUR {
                let ward = self.pick(BASE_WARDS);
                let mut at = moved;
                if self.chance(5) {
                    // Moved to the wrong ward on the PAS, corrected with A12.
                    let wrong_ward = self.pick(BASE_WARDS);
                    let wrong = self.next_draft();
                    let wrong_bed = self.bed_on(wrong_ward);
                    self.draft(
                        at,
                        System::Pas,
                        Payload::Transferred(Transferred {
                            to: Some(wrong_bed),
                            from: Some(location.clone()),
                        }),
                    )
                    .in_encounter(&encounter_id)
                    .on_time();
                    let cancelled_at = at + self.between(15 * MINUTE, HOUR);
                    let cancelled_event_id = self.event_id(wrong);
                    self.draft(
                        cancelled_at,
                        System::Pas,
                        Payload::TransferCancelled(TransferCancelled {
                            cancelled_event_id,
                            ..Default::default()
                        }),
                    )
                    .in_encounter(&encounter_id)
                    .caused_by(wrong)
                    .recorded_after(wrong);
                    at = cancelled_at + self.between(5 * MINUTE, 20 * MINUTE);
                }
                let bed = self.bed_on(ward);
                self.transfer(at, &encounter_id, &mut location, bed);
                if let Some((id, _)) = admitting_nurse
                    && self.chance(60)
                {
                    self.remove_member(at + self.between(0, 2 * HOUR), System::Epr, id);
                }
                if self.chance(70) {
                    let (id, name) = self.pick(WARD_NURSES);
                    let assigned = at + self.between(HOUR, 8 * HOUR);
                    self.assign_member(
                        assigned.min(settled_by),
                        System::Epr,
                        id,
                        name,
                        "WARD-NURSE",
                    );
                    ward_nurse = Some(id);
                }
                let again = at + self.between(DAY, 4 * DAY);
                if self.chance(30) && again < settled_by - DAY {
                    let ward = if self.chance(50) {
                        location.point_of_care.clone()
                    } else {
                        self.pick(BASE_WARDS).to_owned()
                    };
                    let bed = self.bed_on(&ward);
                    self.transfer(again, &encounter_id, &mut location, bed);
                }
            }
        }

        // Therapy.
        let therapy = admitted_at + self.between(DAY, 3 * DAY);
        let therapist = (self.chance(40) && therapy < settled_by).then(|| self.pick(THERAPISTS));
        if let Some((id, name, role)) = therapist {
            self.assign_member(therapy, System::Epr, id, name, role);
        }

        // The care plan.
        let planned = self.working_hours(admitted_at + self.between(20 * HOUR, 40 * HOUR), 9, 17);
        if self.stays == 1 && self.chance(75) && planned < settled_by {
            let goals = vec![
                goal(
                    "G1",
                    "Mobilise independently with a frame",
                    date_of(leaves_at),
                ),
                goal(
                    "G2",
                    "Return to usual place of residence",
                    date_of(leaves_at + 2 * DAY),
                ),
            ];
            let interventions = vec![
                intervention("I1", "Comprehensive geriatric assessment", "Frailty team"),
                intervention("I2", "Daily physiotherapy", "Therapies"),
            ];
            self.change_care_plan(
                planned,
                System::Epr,
                CarePlanStatus::Active,
                goals,
                interventions,
                "",
            );
        }

        // The expected date of discharge, estimated then moved.
        let estimated = self.working_hours(admitted_at + self.between(12 * HOUR, 30 * HOUR), 8, 18);
        if estimated < settled_by {
            let guess = admitted_at + (leaves_at - admitted_at) * self.draw(5..13) / 10;
            self.expect_discharge(estimated, &encounter_id, admission, guess);
            let revised = estimated + self.between(2 * DAY, 5 * DAY);
            if self.chance(55) && revised < settled_by {
                self.expect_discharge(revised, &encounter_id, admission, leaves_at);
            }
        }

        // A referral to the frailty service.
        if self.frailty >= 5 && self.chance(65) {
            let requested =
                self.working_hours(admitted_at + self.between(6 * HOUR, 2 * DAY), 8, 18);
            self.refer_to_frailty_service(requested.min(settled_by));
        }

        // Leave of absence.
        if self.chance(6) && leaves_at - admitted_at > 4 * DAY {
            let left = self.between(admitted_at + 2 * DAY, leaves_at - 2 * DAY);
            let back = left + self.between(4 * HOUR, 30 * HOUR);
            if back < settled_by {
                self.leave(left, back, &encounter_id);
            }
        }

        // Medically optimised: ready to go, often days before they do.
        match outcome {
            Outcome::Discharged(destination) if self.chance(85) => {
                let waiting = match destination {
                    Destination::CareHome | Destination::CommunityHospital => {
                        self.between(DAY, 6 * DAY)
                    }
                    _ => self.between(2 * HOUR, 2 * DAY),
                };
                let mut ready = (leaves_at - waiting).max(admitted_at + 12 * HOUR);
                self.set_optimised(ready, &encounter_id, admission);
                if self.chance(15) {
                    let revoked = ready + self.between(6 * HOUR, 36 * HOUR);
                    self.revoke_optimised(revoked, &encounter_id, admission);
                    ready = revoked + self.between(DAY, 3 * DAY);
                    self.set_optimised(ready, &encounter_id, admission);
                }
                leaves_at =
                    leaves_at.max(self.working_hours(ready + self.between(2 * HOUR, DAY), 10, 19));
                if self.care_plan_version.is_some() {
                    let goals = vec![goal(
                        "G3",
                        "Safe discharge with support in place",
                        date_of(leaves_at),
                    )];
                    let interventions = vec![intervention(
                        "I3",
                        "Discharge to assess: onward care arranged",
                        "Discharge team",
                    )];
                    self.change_care_plan(
                        self.between(ready + 30 * MINUTE, leaves_at - 30 * MINUTE),
                        System::Epr,
                        CarePlanStatus::Active,
                        goals,
                        interventions,
                        "",
                    );
                }
            }
            Outcome::StillInHospital if self.chance(40) => {
                // A delayed discharge: ready to go, still in a bed.
                let ready = (settled_by - self.between(HOUR, 3 * DAY)).max(admitted_at + 12 * HOUR);
                self.set_optimised(ready, &encounter_id, admission);
                if self.chance(15) {
                    let revoked = ready + self.between(HOUR, 12 * HOUR);
                    self.revoke_optimised(revoked, &encounter_id, admission);
                }
            }
            Outcome::DiedInHospital if self.chance(20) => {
                let ready =
                    (leaves_at - self.between(2 * DAY, 4 * DAY)).max(admitted_at + 6 * HOUR);
                self.set_optimised(ready, &encounter_id, admission);
                let revoked = self.between(ready + HOUR, leaves_at - HOUR);
                self.revoke_optimised(revoked, &encounter_id, admission);
            }
            _ => {}
        }

        match outcome {
            Outcome::StillInHospital => {
                if self.chance(10) {
                    // On leave as the feed ends.
                    let left = self.between(settled_by - 12 * HOUR, settled_by);
                    self.draft(
                        left,
                        System::Pas,
                        Payload::LeaveStarted(LeaveStarted {
                            expected_return_at: Some(timestamp(left + DAY)),
                        }),
                    )
                    .in_encounter(&encounter_id);
                }
                StayEnd::StillInHospital
            }
            Outcome::DiedInHospital => {
                self.died_in_hospital(leaves_at, &encounter_id);
                StayEnd::Died
            }
            Outcome::Discharged(destination) => {
                let (left_at, discharge) = self.discharge(leaves_at, &encounter_id, destination);
                if let Some(id) = ward_nurse
                    && self.chance(50)
                {
                    self.remove_member(left_at + self.between(0, 3 * HOUR), System::Epr, id);
                }
                if let Some((id, ..)) = therapist {
                    self.remove_member(left_at + self.between(0, 3 * HOUR), System::Epr, id);
                }
                StayEnd::Left {
                    destination,
                    at: left_at,
                    discharge,
                }
            }
        }
    }

    fn transfer(&mut self, at: i64, encounter_id: &str, location: &mut Location, to: Location) {
        self.draft(
            at,
            System::Pas,
            Payload::Transferred(Transferred {
                to: Some(to.clone()),
                from: Some(location.clone()),
            }),
        )
        .in_encounter(encounter_id);
        *location = to;
    }

    fn leave(&mut self, left: i64, back: i64, encounter_id: &str) {
        let expected = left + (back - left) / HOUR * HOUR;
        self.draft(
            left,
            System::Pas,
            Payload::LeaveStarted(LeaveStarted {
                expected_return_at: Some(timestamp(expected)),
            }),
        )
        .in_encounter(encounter_id);
        self.draft(back, System::Pas, Payload::LeaveEnded(LeaveEnded {}))
            .in_encounter(encounter_id);
    }

    /// Discharges the patient, sometimes in error first (A03 then A13, then
    /// the real discharge later). Returns when they left and the discharge.
    fn discharge(&mut self, at: i64, encounter_id: &str, destination: Destination) -> (i64, usize) {
        let payload = self.discharge_payload(destination);
        let mut discharge = self.next_draft();
        self.draft(at, System::Pas, Payload::Discharged(payload.clone()))
            .in_encounter(encounter_id);
        let mut left_at = at;
        if self.chance(5) {
            self.drafts[discharge].on_time = true;
            let cancelled_at = at + self.between(15 * MINUTE, HOUR);
            let cancelled_event_id = if self.chance(50) {
                self.event_id(discharge)
            } else {
                String::new()
            };
            self.draft(
                cancelled_at,
                System::Pas,
                Payload::DischargeCancelled(DischargeCancelled { cancelled_event_id }),
            )
            .in_encounter(encounter_id)
            .caused_by(discharge)
            .recorded_after(discharge);
            left_at = self.working_hours(cancelled_at + self.between(3 * HOUR, DAY), 10, 19);
            discharge = self.next_draft();
            self.draft(left_at, System::Pas, Payload::Discharged(payload))
                .in_encounter(encounter_id);
        }
        (left_at, discharge)
    }

    fn discharge_payload(&mut self, destination: Destination) -> Discharged {
        let (method, disposition) = match destination {
            Destination::SelfDischarge => (DischargeMethod::SelfDischarge, "2"),
            _ => (DischargeMethod::ClinicalAdvice, "1"),
        };
        let (coded, destination_code, destination_organisation) = match destination {
            Destination::Home | Destination::SelfDischarge => {
                (DischargeDestination::Home, "19", String::new())
            }
            Destination::VirtualWard => (
                DischargeDestination::VirtualWard,
                "19",
                self.organisation().to_owned(),
            ),
            Destination::CareHome => (
                DischargeDestination::CareHome,
                "54",
                self.pick(CARE_HOMES).0.to_owned(),
            ),
            Destination::CommunityHospital => (
                DischargeDestination::CommunityHospital,
                "51",
                self.pick(COMMUNITY_HOSPITALS).to_owned(),
            ),
        };
        Discharged {
            method: method as i32,
            destination: coded as i32,
            disposition_code: disposition.to_owned(),
            destination_code: destination_code.to_owned(),
            destination_organisation,
        }
    }

    fn died_in_hospital(&mut self, died_at: i64, encounter_id: &str) {
        let death = self.next_draft();
        self.draft(
            died_at,
            System::Pas,
            Payload::Died(Died {
                died_at: Some(timestamp(died_at)),
            }),
        );
        self.draft(
            died_at + self.between(30 * MINUTE, 150 * MINUTE),
            System::Pas,
            Payload::Discharged(Discharged {
                method: DischargeMethod::Died as i32,
                destination: DischargeDestination::Mortuary as i32,
                disposition_code: "4".into(),
                destination_code: "79".into(),
                destination_organisation: String::new(),
            }),
        )
        .in_encounter(encounter_id)
        .caused_by(death);
        self.close_referral_after_death(died_at);
    }

    fn close_referral_after_death(&mut self, died_at: i64) {
        if let Some(referral) = self.frailty_referral.take() {
            self.draft(
                died_at + self.between(2 * HOUR, 2 * DAY),
                System::Referrals,
                Payload::ReferralCancelled(ReferralCancelled {
                    referral_id: referral.referral_id,
                    reason: "patient died".into(),
                }),
            );
        }
    }

    // ---- facts within and around stays -------------------------------------

    fn assign_member(&mut self, at: i64, system: System, id: &str, name: &str, role: &str) {
        let organisation = match system {
            System::Community => COMMUNITY_TRUST.to_owned(),
            _ => self.organisation().to_owned(),
        };
        self.draft(
            at,
            system,
            Payload::CareTeamMemberAssigned(CareTeamMemberAssigned {
                member: Some(CareTeamMember {
                    member_id: id.to_owned(),
                    name: name.to_owned(),
                    role: Some(Coding {
                        system: LOCAL_CODES.to_owned(),
                        code: role.to_owned(),
                        display: role.to_lowercase().replace('-', " "),
                    }),
                    organisation,
                }),
            }),
        );
    }

    fn remove_member(&mut self, at: i64, system: System, id: &str) {
        self.draft(
            at,
            system,
            Payload::CareTeamMemberRemoved(CareTeamMemberRemoved {
                member_id: id.to_owned(),
            }),
        );
    }

    fn assess_frailty(&mut self, at: i64, system: System) {
        let assessor = self.pick(ASSESSORS).to_owned();
        self.draft(
            at,
            system,
            Payload::FrailtyAssessed(FrailtyAssessed {
                clinical_frailty_scale: self.frailty,
                assessor,
            }),
        );
    }

    /// Frailty mostly stays or progresses between assessments.
    fn frailty_drifts(&mut self) {
        let change = self.weighted(&[(0, 50), (1, 35), (-1, 15)]);
        self.frailty = self.frailty.saturating_add_signed(change).clamp(1, 9);
    }

    /// The next version of the patient's one care plan (the first, if none).
    fn change_care_plan(
        &mut self,
        at: i64,
        system: System,
        status: CarePlanStatus,
        goals: Vec<Goal>,
        interventions: Vec<Intervention>,
        episode_id: &str,
    ) {
        let version = self.care_plan_version.map_or(1, |v| v + 1);
        self.care_plan_version = Some(version);
        self.draft(
            at,
            system,
            Payload::CarePlanChanged(CarePlanChanged {
                care_plan_id: format!("CP-{:06}", self.patient),
                version,
                status: status as i32,
                goals,
                interventions,
                episode_id: episode_id.to_owned(),
            }),
        );
    }

    fn expect_discharge(&mut self, at: i64, encounter_id: &str, admission: usize, on: i64) {
        self.draft(
            at,
            System::Epr,
            Payload::ExpectedDischargeDateSet(ExpectedDischargeDateSet {
                expected_discharge_date: Some(date_of(on)),
            }),
        )
        .in_encounter(encounter_id)
        .recorded_after(admission);
    }

    fn set_optimised(&mut self, at: i64, encounter_id: &str, admission: usize) {
        self.draft(
            at,
            System::Epr,
            Payload::MedicallyOptimised(MedicallyOptimised {}),
        )
        .in_encounter(encounter_id)
        .recorded_after(admission);
    }

    fn revoke_optimised(&mut self, at: i64, encounter_id: &str, admission: usize) {
        let reason = self.pick(DETERIORATIONS).to_owned();
        self.draft(
            at,
            System::Epr,
            Payload::MedicallyOptimisedRevoked(MedicallyOptimisedRevoked { reason }),
        )
        .in_encounter(encounter_id)
        .recorded_after(admission);
    }

    fn next_referral_id(&mut self) -> String {
        self.referrals += 1;
        format!("REF-{:06}-{}", self.patient, self.referrals)
    }

    fn frailty_service(&self) -> Service {
        Service {
            code: format!("FRAILTY-{}", self.organisation()),
            name: "Frailty assessment service".into(),
            organisation: self.organisation().to_owned(),
        }
    }

    /// Requests the frailty service; it accepts, declines, is withdrawn or
    /// has not answered yet.
    fn refer_to_frailty_service(&mut self, at: i64) {
        let frailty = self.frailty;
        let referral_id = self.next_referral_id();
        let urgent = self.chance(60);
        let request = self.next_draft();
        self.draft(
            at,
            System::Referrals,
            Payload::ReferralRequested(ReferralRequested {
                referral_id: referral_id.clone(),
                service: Some(self.frailty_service()),
                priority: if urgent {
                    ReferralPriority::Urgent
                } else {
                    ReferralPriority::Routine
                } as i32,
                reason: Some(Coding {
                    system: LOCAL_CODES.to_owned(),
                    code: "FRAILTY".into(),
                    display: format!("Frailty, Clinical Frailty Scale {frailty}"),
                }),
                referring_organisation: self.organisation().to_owned(),
                respond_by: Some(timestamp(at + if urgent { 2 * DAY } else { 5 * DAY })),
                original_referral_id: String::new(),
            }),
        );
        let answered = at + self.between(HOUR, 20 * HOUR);
        let answer = self.weighted(&[
            (Answer::Accepted, 75),
            (Answer::Rejected, 12),
            (Answer::Withdrawn, 6),
            (Answer::Pending, 7),
        ]);
        match answer {
            Answer::Accepted => {
                self.draft(
                    answered,
                    System::Referrals,
                    Payload::ReferralAccepted(ReferralAccepted {
                        referral_id: referral_id.clone(),
                    }),
                )
                .caused_by(request);
                self.frailty_referral = Some(FrailtyReferral {
                    referral_id,
                    accepted: true,
                });
            }
            Answer::Rejected => {
                let reason = self.pick(REJECTION_REASONS).to_owned();
                self.draft(
                    answered,
                    System::Referrals,
                    Payload::ReferralRejected(ReferralRejected {
                        referral_id,
                        reason,
                    }),
                )
                .caused_by(request);
            }
            Answer::Withdrawn => {
                let reason = self.pick(WITHDRAWAL_REASONS).to_owned();
                self.draft(
                    answered,
                    System::Referrals,
                    Payload::ReferralCancelled(ReferralCancelled {
                        referral_id,
                        reason,
                    }),
                );
            }
            Answer::Pending => {
                // Not answered yet: an open, soon overdue, referral.
                self.frailty_referral = Some(FrailtyReferral {
                    referral_id,
                    accepted: false,
                });
            }
        }
    }

    fn complete_frailty_referral(&mut self, at: i64, system: System) {
        if let Some(referral) = self.frailty_referral.take_if(|r| r.accepted) {
            self.draft(
                at,
                system,
                Payload::ReferralCompleted(ReferralCompleted {
                    referral_id: referral.referral_id,
                }),
            );
        }
    }

    fn next_episode_id(&mut self, prefix: &str) -> String {
        self.episodes += 1;
        format!("{prefix}-{:06}-{}", self.patient, self.episodes)
    }

    // ---- after hospital ----------------------------------------------------

    /// Hospital-level care at home after a discharge to the virtual ward.
    fn virtual_ward(
        &mut self,
        discharged_at: i64,
        discharge: usize,
        can_readmit: bool,
    ) -> VirtualWardEnd {
        let episode_id = self.next_episode_id("VW");
        let organisation = self.organisation().to_owned();
        let (code, name, pathway) = self.weighted(&[
            (("VW-FRAIL", "Frailty virtual ward", Pathway::Frailty), 80),
            (
                (
                    "VW-ARI",
                    "Acute respiratory infection virtual ward",
                    Pathway::AcuteRespiratoryInfection,
                ),
                10,
            ),
            (
                ("VW-HF", "Heart failure virtual ward", Pathway::HeartFailure),
                10,
            ),
        ]);
        let started = discharged_at + self.between(30 * MINUTE, 3 * HOUR);
        self.draft(
            started,
            System::VirtualWard,
            Payload::EpisodeStarted(EpisodeStarted {
                episode_id: episode_id.clone(),
                r#type: EpisodeType::VirtualWard as i32,
                service: Some(Service {
                    code: format!("{code}-{organisation}"),
                    name: name.to_owned(),
                    organisation,
                }),
                pathway: pathway as i32,
            }),
        )
        .caused_by(discharge);
        let (nurse, nurse_name) = self.pick(VIRTUAL_WARD_NURSES);
        self.assign_member(
            started + self.between(HOUR, 4 * HOUR),
            System::VirtualWard,
            nurse,
            nurse_name,
            "VIRTUAL-WARD-NURSE",
        );
        let length = self.between(3 * DAY, 14 * DAY);
        let ends = self.working_hours(started + length, 9, 18);
        let goals = vec![goal(
            "G4",
            "Recover at home without readmission",
            date_of(ends),
        )];
        let interventions = vec![
            intervention("I4", "Twice-daily virtual ward round", name),
            intervention("I5", "Remote monitoring of NEWS2 observations", name),
        ];
        self.change_care_plan(
            started + self.between(2 * HOUR, 6 * HOUR),
            System::VirtualWard,
            CarePlanStatus::Active,
            goals.clone(),
            interventions.clone(),
            &episode_id,
        );
        if self.chance(30) {
            self.frailty_drifts();
            let assessed = started + self.between(DAY, 3 * DAY);
            self.assess_frailty(assessed, System::VirtualWard);
        }
        let outcome = self.weighted(&[
            (Stay::Completed, 55),
            (Stay::Readmitted, if can_readmit { 20 } else { 0 }),
            (Stay::Ongoing, 18),
            (Stay::Died, 7),
        ]);
        match outcome {
            Stay::Readmitted => VirtualWardEnd::Readmitted {
                at: self.between(started + DAY, started + length),
                episode_id,
                nurse,
            },
            Stay::Died => {
                let died_at = self.between(started + DAY, started + length);
                let death = self.next_draft();
                self.draft(
                    died_at,
                    System::VirtualWard,
                    Payload::Died(Died {
                        died_at: Some(timestamp(died_at)),
                    }),
                );
                self.draft(
                    died_at + self.between(HOUR, 3 * HOUR),
                    System::VirtualWard,
                    Payload::EpisodeEnded(EpisodeEnded {
                        episode_id,
                        reason: EpisodeEndReason::Died as i32,
                    }),
                )
                .caused_by(death);
                self.close_referral_after_death(died_at);
                VirtualWardEnd::Finished
            }
            Stay::Completed => {
                self.draft(
                    ends,
                    System::VirtualWard,
                    Payload::EpisodeEnded(EpisodeEnded {
                        episode_id: episode_id.clone(),
                        reason: EpisodeEndReason::Completed as i32,
                    }),
                );
                self.remove_member(ends + self.between(0, 2 * HOUR), System::VirtualWard, nurse);
                self.change_care_plan(
                    ends + self.between(0, 3 * HOUR),
                    System::VirtualWard,
                    CarePlanStatus::Completed,
                    goals,
                    interventions,
                    &episode_id,
                );
                self.complete_frailty_referral(ends + self.between(HOUR, DAY), System::Referrals);
                VirtualWardEnd::Finished
            }
            Stay::Ongoing => VirtualWardEnd::Finished,
        }
    }

    /// Follow-up after a discharge home: the frailty service's caseload
    /// for some, community nursing for others.
    fn follow_up_at_home(&mut self, discharged_at: i64) {
        if self.frailty_referral.as_ref().is_some_and(|r| r.accepted) {
            if self.chance(40) {
                let episode_id = self.next_episode_id("CL");
                let started = self.working_hours(discharged_at + self.between(DAY, 4 * DAY), 9, 17);
                self.draft(
                    started,
                    System::Referrals,
                    Payload::EpisodeStarted(EpisodeStarted {
                        episode_id: episode_id.clone(),
                        r#type: EpisodeType::FrailtyCaseload as i32,
                        service: Some(self.frailty_service()),
                        pathway: Pathway::Frailty as i32,
                    }),
                );
                let ended = started + self.between(14 * DAY, 42 * DAY);
                self.draft(
                    ended,
                    System::Referrals,
                    Payload::EpisodeEnded(EpisodeEnded {
                        episode_id,
                        reason: EpisodeEndReason::Completed as i32,
                    }),
                );
                self.complete_frailty_referral(ended + self.between(0, DAY), System::Referrals);
            } else {
                let seen = discharged_at + self.between(3 * DAY, 14 * DAY);
                self.complete_frailty_referral(seen, System::Referrals);
            }
        }
        if self.chance(25) {
            self.community_nursing(discharged_at);
        }
    }

    fn community_nursing(&mut self, discharged_at: i64) {
        let referral_id = self.next_referral_id();
        let requested = discharged_at - self.between(HOUR, 3 * HOUR);
        let request = self.next_draft();
        let original_referral_id = self
            .frailty_referral
            .as_ref()
            .map(|r| r.referral_id.clone())
            .unwrap_or_default();
        self.draft(
            requested,
            System::Referrals,
            Payload::ReferralRequested(ReferralRequested {
                referral_id: referral_id.clone(),
                service: Some(Service {
                    code: format!("COMMUNITY-NURSING-{COMMUNITY_TRUST}"),
                    name: "Community nursing".into(),
                    organisation: COMMUNITY_TRUST.into(),
                }),
                priority: ReferralPriority::Routine as i32,
                reason: Some(Coding {
                    system: LOCAL_CODES.into(),
                    code: "DISCHARGE-SUPPORT".into(),
                    display: "Support at home after discharge".into(),
                }),
                referring_organisation: self.organisation().to_owned(),
                respond_by: Some(timestamp(requested + 3 * DAY)),
                original_referral_id,
            }),
        );
        let accepted = discharged_at + self.between(4 * HOUR, 30 * HOUR);
        self.draft(
            accepted,
            System::Community,
            Payload::ReferralAccepted(ReferralAccepted {
                referral_id: referral_id.clone(),
            }),
        )
        .caused_by(request);
        let episode_id = self.next_episode_id("CN");
        let started = self.working_hours(accepted + self.between(HOUR, DAY), 8, 18);
        self.draft(
            started,
            System::Community,
            Payload::EpisodeStarted(EpisodeStarted {
                episode_id: episode_id.clone(),
                r#type: EpisodeType::CommunityCaseload as i32,
                service: Some(Service {
                    code: format!("COMMUNITY-NURSING-{COMMUNITY_TRUST}"),
                    name: "Community nursing".into(),
                    organisation: COMMUNITY_TRUST.into(),
                }),
                pathway: Pathway::Other as i32,
            }),
        );
        let (nurse, name) = self.pick(DISTRICT_NURSES);
        self.assign_member(started, System::Community, nurse, name, "DISTRICT-NURSE");
        let ended = started + self.between(7 * DAY, 28 * DAY);
        self.draft(
            ended,
            System::Community,
            Payload::EpisodeEnded(EpisodeEnded {
                episode_id,
                reason: EpisodeEndReason::Completed as i32,
            }),
        );
        self.remove_member(ended, System::Community, nurse);
        self.draft(
            ended + self.between(0, DAY),
            System::Community,
            Payload::ReferralCompleted(ReferralCompleted { referral_id }),
        );
    }

    fn settle_in_care_home(&mut self, discharged_at: i64) {
        let (_, care_home_postcode) = self.pick(CARE_HOMES);
        if self.chance(70) {
            self.draft(
                discharged_at + self.between(DAY, 5 * DAY),
                System::Spine,
                Payload::DetailsUpdated(DetailsUpdated {
                    demographics: Some(Demographics {
                        postcode: care_home_postcode.to_owned(),
                        ..Default::default()
                    }),
                }),
            );
        }
        self.complete_frailty_referral(
            discharged_at + self.between(3 * DAY, 10 * DAY),
            System::Referrals,
        );
        if self.chance(8) {
            self.die_in_the_community();
        }
    }

    /// A death at home or in a care home, reported through the spine once
    /// registered, a day or so after it happened.
    fn die_in_the_community(&mut self) {
        let died_at = self.latest() + self.between(5 * DAY, 60 * DAY);
        let reported = died_at + self.between(2 * HOUR, 30 * HOUR);
        self.draft(
            reported,
            System::Spine,
            Payload::Died(Died {
                died_at: Some(timestamp(died_at)),
            }),
        );
    }

    // ---- out --------------------------------------------------------------

    /// Gives every draft its recorded time and id, and returns the events
    /// in the order the feed delivers them.
    fn into_events(mut self) -> VecDeque<CareEvent> {
        let late_per_mille = u32::from(self.config.late_events_per_mille);
        let mut recorded = Vec::with_capacity(self.drafts.len());
        for index in 0..self.drafts.len() {
            let draft = &self.drafts[index];
            let (on_time, occurred, after) = (draft.on_time, draft.occurred, draft.recorded_after);
            let delay = if !on_time && self.ratio(late_per_mille, 1000) {
                self.late_delay()
            } else {
                self.draw(2..=90)
            };
            let mut at = occurred + delay;
            if let Some(after) = after {
                at = at.max(recorded[after]);
            }
            recorded.push(at);
        }
        let mut order: Vec<usize> = (0..self.drafts.len()).collect();
        order.sort_by_key(|&index| (recorded[index], index));

        let mut drafts: Vec<Option<Draft>> = std::mem::take(&mut self.drafts)
            .into_iter()
            .map(Some)
            .collect();
        order
            .into_iter()
            .map(|index| {
                let draft = drafts[index].take().expect("each draft is taken once");
                self.event(draft, index, recorded[index])
            })
            .collect()
    }

    /// How late a late event is: mostly minutes, sometimes most of a day.
    fn late_delay(&self) -> i64 {
        let band = self.weighted(&[
            ((10 * MINUTE, HOUR), 50),
            ((HOUR, 6 * HOUR), 35),
            ((6 * HOUR, 20 * HOUR), 15),
        ]);
        self.draw(band.0..band.1)
    }

    fn event(&self, draft: Draft, index: usize, recorded: i64) -> CareEvent {
        let organisation = match draft.system {
            System::Community => COMMUNITY_TRUST.to_owned(),
            System::Spine => SPINE.to_owned(),
            _ => self.organisation().to_owned(),
        };
        CareEvent {
            event_id: self.event_id(index),
            patient: Some(self.identity.clone()),
            occurred_at: Some(timestamp(draft.occurred)),
            recorded_at: Some(timestamp(recorded)),
            source: Some(Source {
                system: draft.system.name().to_owned(),
                organisation,
                message_id: format!("{:07}{index:04}", self.patient),
            }),
            correlation_id: draft.correlation_id,
            causation_id: draft
                .caused_by
                .map(|cause| self.event_id(cause))
                .unwrap_or_default(),
            encounter_id: draft.encounter_id,
            payload: Some(*draft.payload),
        }
    }
}

fn timestamp(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

fn goal(goal_id: &str, description: &str, target: baton_proto::events::v1::Date) -> Goal {
    Goal {
        goal_id: goal_id.to_owned(),
        description: description.to_owned(),
        target_date: Some(target),
    }
}

fn intervention(intervention_id: &str, description: &str, responsible: &str) -> Intervention {
    Intervention {
        intervention_id: intervention_id.to_owned(),
        description: description.to_owned(),
        responsible: responsible.to_owned(),
    }
}
