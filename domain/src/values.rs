//! Validated value types. Each is valid by construction: the constructors check, the fields are
//! private, and deserialization goes through the same checks, so an event or a command that holds
//! one never holds a bad one.

use crate::error::CaseError;
use chrono::{DateTime, Datelike, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Shenzhen's offset (UTC+8, no daylight saving): case numbers and months are counted in it.
pub fn shenzhen_offset() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// The calendar year of an instant in Shenzhen.
pub fn shenzhen_year(at: DateTime<Utc>) -> i32 {
    at.with_timezone(&shenzhen_offset()).year()
}

/// Checks free text: trimmed, not empty, at most `max` characters, no control characters other
/// than line breaks and tabs. Returns the trimmed text.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, CaseError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(CaseError::invalid(field, "must not be empty"));
    }
    if trimmed.chars().count() > max {
        return Err(CaseError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(CaseError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_string())
}

/// An amount of money in integer fen (分). Never negative. On the wire it is a decimal string in
/// yuan with at most two decimals; in events it is the integer number of fen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(u64);

impl Money {
    /// The largest amount accepted: 10^13 yuan, far above any dispute, far below overflow when
    /// summed over a city's cases.
    pub const MAX_FEN: u64 = 1_000_000_000_000_000;

    /// An amount from fen.
    pub fn from_fen(fen: u64) -> Result<Money, CaseError> {
        if fen > Self::MAX_FEN {
            return Err(CaseError::invalid("", "is too large"));
        }
        Ok(Money(fen))
    }

    /// The amount in fen.
    pub fn fen(self) -> u64 {
        self.0
    }

    /// Parses a yuan decimal string such as `"12500"`, `"12500.5"` or `"12500.00"`.
    pub fn parse_yuan(s: &str) -> Result<Money, CaseError> {
        let bad = |m: &str| CaseError::invalid("", m.to_string());
        if s.starts_with('-') {
            return Err(bad("must not be negative"));
        }
        let (int_part, frac_part) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("must be a decimal amount in yuan, e.g. \"12500.00\""));
        }
        if s.contains('.') && frac_part.is_empty() {
            return Err(bad("must be a decimal amount in yuan, e.g. \"12500.00\""));
        }
        if !frac_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("must be a decimal amount in yuan, e.g. \"12500.00\""));
        }
        if frac_part.len() > 2 {
            return Err(bad("must have at most two decimals"));
        }
        if int_part.len() > 16 {
            return Err(bad("is too large"));
        }
        let yuan: u64 = int_part.parse().map_err(|_| bad("is too large"))?;
        let mut fen_frac: u64 = if frac_part.is_empty() {
            0
        } else {
            frac_part.parse().map_err(|_| bad("is not a number"))?
        };
        if frac_part.len() == 1 {
            fen_frac *= 10;
        }
        let fen = yuan
            .checked_mul(100)
            .and_then(|f| f.checked_add(fen_frac))
            .ok_or_else(|| bad("is too large"))?;
        Money::from_fen(fen)
    }

    /// The yuan decimal string with exactly two decimals.
    pub fn to_yuan_string(self) -> String {
        format!("{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_yuan_string())
    }
}

/// A mediation room's id from the registry, e.g. `R07`. ASCII letters, digits and `_` only, so
/// it can stand inside a case number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);

impl RoomId {
    /// Checks the shape of a room id (whether the room exists is the registry's question).
    pub fn new(s: &str) -> Result<RoomId, CaseError> {
        if s.is_empty()
            || s.len() > 32
            || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(CaseError::invalid(
                "",
                "must be 1–32 ASCII letters, digits or underscores",
            ));
        }
        Ok(RoomId(s.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RoomId {
    type Error = CaseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RoomId::new(&s)
    }
}

impl From<RoomId> for String {
    fn from(r: RoomId) -> String {
        r.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A case number `<room_id>-<year>-<NNNN>`: unique and gapless per room and year, numbered in the
/// order filings are committed. The store picks the number; the domain checks it fits the filing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CaseNo {
    room_id: RoomId,
    year: i32,
    number: u32,
}

impl CaseNo {
    /// A case number from its parts; `number` starts at 1.
    pub fn new(room_id: RoomId, year: i32, number: u32) -> Result<CaseNo, CaseError> {
        if number == 0 || !(1000..=9999).contains(&year) {
            return Err(CaseError::invalid("case_no", "is not a valid case number"));
        }
        Ok(CaseNo {
            room_id,
            year,
            number,
        })
    }

    /// The room that filed the case.
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }

    /// The filing year (Shenzhen time).
    pub fn year(&self) -> i32 {
        self.year
    }

    /// The number within room and year.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The series the number counts in: `<room_id>-<year>`.
    pub fn series(&self) -> String {
        format!("{}-{}", self.room_id, self.year)
    }
}

impl fmt::Display for CaseNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{:04}", self.room_id, self.year, self.number)
    }
}

impl TryFrom<String> for CaseNo {
    type Error = CaseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let bad = || CaseError::invalid("case_no", "is not a valid case number");
        let mut parts = s.rsplitn(3, '-');
        let number = parts.next().ok_or_else(bad)?;
        let year = parts.next().ok_or_else(bad)?;
        let room = parts.next().ok_or_else(bad)?;
        CaseNo::new(
            RoomId::new(room).map_err(|_| bad())?,
            year.parse().map_err(|_| bad())?,
            number.parse().map_err(|_| bad())?,
        )
    }
}

impl From<CaseNo> for String {
    fn from(c: CaseNo) -> String {
        c.to_string()
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses a wire name.
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($wire => Some($name::$variant),)+ _ => None }
            }

            /// The accepted wire names, for error messages.
            pub fn expected() -> String {
                [$($wire),+].join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// What the dispute is about.
    Category {
        /// Membership (会员) disputes.
        Membership = "membership",
        /// Internal governance (内部治理).
        Governance = "governance",
        /// Contracts.
        Contract = "contract",
        /// Labour.
        Labor = "labor",
        /// Intellectual property.
        IntellectualProperty = "intellectual_property",
        /// Fees and dues.
        Fees = "fees",
        /// Other commercial disputes.
        Commercial = "commercial",
        /// Torts.
        Tort = "tort",
        /// Anything else.
        Other = "other",
    }
);

wire_enum!(
    /// How the case came to the room.
    Source {
        /// A party applied.
        PartyApplication = "party_application",
        /// The room took it up itself (主动调解).
        OwnInitiative = "own_initiative",
        /// Referred by a court (委派/委托).
        CourtReferral = "court_referral",
        /// Referred by a government body.
        GovernmentReferral = "government_referral",
        /// Referred by the police.
        PoliceReferral = "police_referral",
        /// Referred by someone else.
        OtherReferral = "other_referral",
    }
);

wire_enum!(
    /// A party's side.
    PartyRole {
        /// 申请人.
        Applicant = "applicant",
        /// 被申请人.
        Respondent = "respondent",
        /// 第三人.
        ThirdParty = "third_party",
    }
);

wire_enum!(
    /// Whether a party is a natural person or an organisation.
    PartyKind {
        /// A natural person.
        Person = "person",
        /// An organisation.
        Organization = "organization",
    }
);

wire_enum!(
    /// The form of an agreement.
    AgreementKind {
        /// 调解协议书.
        Written = "written",
        /// 口头协议.
        Oral = "oral",
    }
);

wire_enum!(
    /// Why mediation ended without agreement.
    TerminationReason {
        /// The parties did not agree (调解不成).
        NoAgreement = "no_agreement",
        /// A party refused mediation.
        PartyRefused = "party_refused",
        /// The applicant withdrew (撤回).
        Withdrawn = "withdrawn",
        /// The parties were guided to another route (引导诉讼、仲裁).
        Referred = "referred",
    }
);

wire_enum!(
    /// Where a failed mediation was referred.
    ReferralRoute {
        /// A court.
        Court = "court",
        /// Arbitration.
        Arbitration = "arbitration",
        /// An administrative body.
        Administrative = "administrative",
        /// Elsewhere.
        Other = "other",
    }
);

wire_enum!(
    /// A judicial confirmation (司法确认) step.
    JudicialStatus {
        /// The parties applied to a court.
        Requested = "requested",
        /// The court confirmed the agreement.
        Confirmed = "confirmed",
        /// The court refused.
        Rejected = "rejected",
    }
);

wire_enum!(
    /// How far an agreement was performed (履行), as a return visit found.
    Performance {
        /// Fully performed.
        Full = "full",
        /// Partly performed.
        Partial = "partial",
        /// Not performed.
        None = "none",
    }
);

/// A unified social credit code (统一社会信用代码, GB 32100-2015): 18 characters from the code's
/// alphabet, the last one a check character over the first 17.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CreditCode(String);

const CREDIT_ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
const CREDIT_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

impl CreditCode {
    /// Checks length, alphabet and check character. Lower-case letters are accepted and stored
    /// upper-case.
    pub fn new(s: &str) -> Result<CreditCode, CaseError> {
        let upper = s.trim().to_ascii_uppercase();
        let values: Option<Vec<u32>> = upper
            .chars()
            .map(|c| CREDIT_ALPHABET.find(c).map(|i| i as u32))
            .collect();
        let values = match values {
            Some(v) if v.len() == 18 => v,
            _ => {
                return Err(CaseError::invalid(
                    "",
                    "must be an 18-character unified social credit code",
                ))
            }
        };
        let sum: u32 = values[..17]
            .iter()
            .zip(CREDIT_WEIGHTS)
            .map(|(v, w)| v * w)
            .sum();
        let check = (31 - sum % 31) % 31;
        if values[17] != check {
            return Err(CaseError::invalid(
                "",
                "is not a valid unified social credit code (check character mismatch)",
            ));
        }
        Ok(CreditCode(upper))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CreditCode {
    type Error = CaseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CreditCode::new(&s)
    }
}

impl From<CreditCode> for String {
    fn from(c: CreditCode) -> String {
        c.0
    }
}

/// A party to the dispute. Personal fields (`id_number`, `phone`) are kept as given and masked
/// on the way out for everyone but the case's own room staff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// The party's side.
    pub role: PartyRole,
    /// Person or organisation.
    pub kind: PartyKind,
    /// The party's name.
    pub name: String,
    /// An organisation's unified social credit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_code: Option<CreditCode>,
    /// A person's identity document number (personal information).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_number: Option<String>,
    /// A contact phone number (personal information).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Who represents the party (an organisation's legal representative, an agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub representative: Option<String>,
}

impl Party {
    /// Builds a party, checking each field. Errors name the field relative to the party.
    pub fn new(
        role: PartyRole,
        kind: PartyKind,
        name: &str,
        credit_code: Option<&str>,
        id_number: Option<&str>,
        phone: Option<&str>,
        representative: Option<&str>,
    ) -> Result<Party, CaseError> {
        let name = text("name", name, 200)?;
        let credit_code = match credit_code {
            None => None,
            Some(_) if kind == PartyKind::Person => {
                return Err(CaseError::invalid(
                    "credit_code",
                    "only organisations have a unified social credit code",
                ))
            }
            Some(c) => Some(CreditCode::new(c).map_err(|e| e.under("credit_code"))?),
        };
        let id_number = match id_number {
            None => None,
            Some(n) => {
                let n = n.trim().to_ascii_uppercase();
                let ok = (n.len() == 18
                    && n.as_bytes()[..17].iter().all(|b| b.is_ascii_digit())
                    && (n.as_bytes()[17].is_ascii_digit() || n.as_bytes()[17] == b'X'))
                    || (n.len() == 15 && n.bytes().all(|b| b.is_ascii_digit()));
                if !ok {
                    return Err(CaseError::invalid(
                        "id_number",
                        "must be a 15- or 18-character identity number",
                    ));
                }
                Some(n)
            }
        };
        let phone = match phone {
            None => None,
            Some(p) => {
                let p = p.trim();
                let digits = p.bytes().filter(|b| b.is_ascii_digit()).count();
                if !(7..=20).contains(&digits)
                    || !p
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'+' || b == b'-' || b == b' ')
                {
                    return Err(CaseError::invalid(
                        "phone",
                        "must be a phone number of 7–20 digits",
                    ));
                }
                Some(p.to_string())
            }
        };
        let representative = representative
            .map(|r| text("representative", r, 200))
            .transpose()?;
        Ok(Party {
            role,
            kind,
            name,
            credit_code,
            id_number,
            phone,
            representative,
        })
    }
}

/// Checks that the parties include at least one applicant and one respondent.
pub fn check_parties(parties: &[Party]) -> Result<(), CaseError> {
    if parties.len() > 50 {
        return Err(CaseError::invalid("parties", "at most 50 parties"));
    }
    if !parties.iter().any(|p| p.role == PartyRole::Applicant) {
        return Err(CaseError::invalid(
            "parties",
            "must include at least one applicant",
        ));
    }
    if !parties.iter().any(|p| p.role == PartyRole::Respondent) {
        return Err(CaseError::invalid(
            "parties",
            "must include at least one respondent",
        ));
    }
    Ok(())
}

/// Masks all but the first `keep_start` and last `keep_end` characters with `*`.
pub fn mask(value: &str, keep_start: usize, keep_end: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= keep_start + keep_end {
        return "*".repeat(chars.len());
    }
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep_start || i >= chars.len() - keep_end {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_parses_yuan_with_at_most_two_decimals() {
        assert_eq!(Money::parse_yuan("12500.00").unwrap().fen(), 1_250_000);
        assert_eq!(Money::parse_yuan("12500.5").unwrap().fen(), 1_250_050);
        assert_eq!(Money::parse_yuan("0").unwrap().fen(), 0);
        assert_eq!(Money::parse_yuan("0.07").unwrap().to_yuan_string(), "0.07");
        for bad in [
            "1.234", "-1", "-0.01", "", ".5", "5.", "1e3", "1,000", " 1", "abc",
        ] {
            assert!(Money::parse_yuan(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn credit_code_checks_its_check_character() {
        assert!(CreditCode::new("91350100M000100Y43").is_ok());
        assert!(CreditCode::new("91350100M000100Y44").is_err());
        assert!(CreditCode::new("91350100M000100Y4").is_err());
        assert!(CreditCode::new("91350100I000100Y43").is_err());
    }

    #[test]
    fn case_no_round_trips_and_pads_to_four_digits() {
        let no = CaseNo::new(RoomId::new("R01").unwrap(), 2026, 7).unwrap();
        assert_eq!(no.to_string(), "R01-2026-0007");
        assert_eq!(CaseNo::try_from("R01-2026-0007".to_string()).unwrap(), no);
        assert_eq!(no.series(), "R01-2026");
    }

    #[test]
    fn masking_keeps_the_ends() {
        assert_eq!(mask("440301199001011234", 4, 4), "4403**********1234");
        assert_eq!(mask("13812345678", 3, 4), "138****5678");
    }
}
