//! The invented reference data journeys draw from: names, places, wards,
//! clinicians and the codes sources send. Nothing here names a real person;
//! organisation codes outside the configured trust are made up.

/// Given names common among people born in the 1930s to 1950s.
pub(crate) const FEMALE_NAMES: &[&str] = &[
    "Margaret", "Dorothy", "Joan", "Patricia", "Jean", "Barbara", "Maureen", "Sheila", "Brenda",
    "Eileen", "Betty", "Doris", "Irene", "Audrey", "Mary", "Elsie", "Edna", "Valerie", "Sylvia",
    "Pauline", "Kathleen", "Gladys", "Hilda", "Shirley",
];

pub(crate) const MALE_NAMES: &[&str] = &[
    "John", "David", "Michael", "Peter", "Robert", "Brian", "Alan", "Kenneth", "Roy", "Derek",
    "Raymond", "Ronald", "Geoffrey", "Frank", "Albert", "George", "Dennis", "Harold", "Leslie",
    "Keith", "Colin", "Malcolm", "Gordon", "Stanley",
];

pub(crate) const FAMILY_NAMES: &[&str] = &[
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
    "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes",
    "Green", "Hall", "Lewis", "Harris", "Clarke", "Patel", "Jackson", "Wood", "Turner", "Martin",
    "Cooper", "Hill", "Ward", "Morris", "Moore", "Clark", "Lee", "King", "Baker", "Harrison",
    "Morgan", "Allen", "Khan", "Ahmed", "Singh", "Kaur", "O'Brien", "Murphy", "Kowalski", "Begum",
];

/// Outward codes of the postcodes the trust serves.
pub(crate) const POSTCODE_DISTRICTS: &[&str] = &[
    "LS6", "LS7", "LS8", "LS9", "LS11", "LS12", "LS13", "LS14", "LS15", "LS17", "LS25", "LS28",
    "WF3", "BD4",
];

/// Letters allowed in the inward part of a postcode.
pub(crate) const POSTCODE_LETTERS: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";

/// ODS codes of the GP practices the patients are registered with.
pub(crate) const GP_PRACTICES: &[&str] = &[
    "B86001", "B86003", "B86005", "B86008", "B86010", "B86012", "B86015", "B86017", "B86019",
    "B86022", "B86025", "B86028", "B86030", "B86033", "B86037", "B86041",
];

/// Where emergencies are admitted first.
pub(crate) const ADMISSIONS_UNIT: &str = "AMU";

/// Wards patients move on to after the admissions unit.
pub(crate) const BASE_WARDS: &[&str] = &[
    "WARD-7",
    "ELDERLY-CARE",
    "WARD-12",
    "WARD-24",
    "FRAILTY-UNIT",
    "RESPIRATORY",
];

/// Wards planned admissions go to.
pub(crate) const ELECTIVE_WARDS: &[&str] = &["WARD-7", "ORTHO-2", "ELDERLY-CARE"];

/// The site every ward is on.
pub(crate) const FACILITY: &str = "MAIN";

/// Consultants, as the PAS names an attending clinician (GMC number, name).
pub(crate) const CONSULTANTS: &[(&str, &str)] = &[
    ("4523817", "Dr Amara Okafor"),
    ("6130284", "Dr Hugh Pemberton"),
    ("7045162", "Dr Priya Raman"),
    ("3981754", "Dr Fiona MacLeod"),
    ("5512093", "Dr Tomasz Nowak"),
    ("6678420", "Dr Grace Adebayo"),
    ("4409831", "Dr Simon Ashworth"),
    ("7212645", "Dr Leila Haddad"),
    ("5830917", "Dr Owen Prichard"),
    ("6954302", "Dr Mei Lin Chen"),
];

/// Nurses by NMC registration: on the admissions unit, on the wards, in
/// the community.
pub(crate) const ADMISSIONS_UNIT_NURSES: &[(&str, &str)] = &[
    ("NMC-81A2345E", "Nurse Joy Mensah"),
    ("NMC-92B1177W", "Nurse Carl Dobson"),
    ("NMC-77C9012S", "Nurse Aisha Rahman"),
];

pub(crate) const WARD_NURSES: &[(&str, &str)] = &[
    ("NMC-85D4471E", "Nurse Becky Hollis"),
    ("NMC-90E3328N", "Nurse Dan Whitfield"),
    ("NMC-88F6154W", "Nurse Sunita Varma"),
    ("NMC-86K3390E", "Nurse Tom Ridley"),
];

pub(crate) const DISTRICT_NURSES: &[(&str, &str)] = &[
    ("NMC-74L1182W", "Nurse Maggie Firth"),
    ("NMC-80M6625S", "Nurse Yusuf Hamid"),
];

/// Therapists by HCPC registration.
pub(crate) const THERAPISTS: &[(&str, &str, &str)] = &[
    ("HCPC-PH104521", "Jo Carver", "PHYSIOTHERAPIST"),
    ("HCPC-PH118347", "Ravi Desai", "PHYSIOTHERAPIST"),
    ("HCPC-OT092266", "Kate Lumley", "OCCUPATIONAL-THERAPIST"),
    ("HCPC-OT087712", "Ngozi Eze", "OCCUPATIONAL-THERAPIST"),
];

pub(crate) const VIRTUAL_WARD_NURSES: &[(&str, &str)] = &[
    ("NMC-79G2203E", "Nurse Helen Barraclough"),
    ("NMC-83H5519S", "Nurse Tunde Bello"),
    ("NMC-91J7740W", "Nurse Anna Sokolova"),
];

/// The code system of the roles and reasons this population invents.
pub(crate) const LOCAL_CODES: &str = "urn:baton:synth";

/// Assessors of the Clinical Frailty Scale.
pub(crate) const ASSESSORS: &[&str] = &[
    "Frailty practitioner K Doyle",
    "Dr P Raman",
    "ANP S Whitaker",
    "Dr G Adebayo",
];

/// Why the frailty service declines a referral.
pub(crate) const REJECTION_REASONS: &[&str] = &[
    "does not meet the service criteria: Clinical Frailty Scale below 5",
    "already on the community frailty caseload",
    "patient declined assessment",
];

/// Why a referral is withdrawn.
pub(crate) const WITHDRAWAL_REASONS: &[&str] = &[
    "duplicate referral",
    "referred to the falls service instead",
];

/// Why a patient stops being medically optimised.
pub(crate) const DETERIORATIONS: &[&str] = &[
    "new delirium",
    "fall on the ward",
    "acute kidney injury",
    "hospital-acquired pneumonia",
    "raised NEWS2 score",
];

/// Care homes, by ODS code and postcode.
pub(crate) const CARE_HOMES: &[(&str, &str)] = &[
    ("VXA1B", "LS8 2QT"),
    ("VXC4D", "LS12 5RN"),
    ("VXE7F", "LS17 6HJ"),
    ("VXG2H", "WF3 1LP"),
    ("VXJ5K", "LS25 7AX"),
];

/// Community hospitals, run by the community trust.
pub(crate) const COMMUNITY_HOSPITALS: &[&str] = &["RYYCH1", "RYYCH2"];

/// The community trust: community nursing and community hospitals.
pub(crate) const COMMUNITY_TRUST: &str = "RYY";

/// The national spine, which reports deaths registered outside hospital.
pub(crate) const SPINE: &str = "X26";
