//! Why the domain refused a command. One enum for the whole crate; the HTTP layer maps each
//! variant to exactly one problem type.

use crate::status::{CaseStatus, Step};

/// A refused command. Nothing is recorded when a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    /// A field's value is not acceptable whatever the case's state (422).
    #[error("{field}: {message}")]
    Invalid {
        /// The field as the caller named it, e.g. `parties[0].credit_code`.
        field: String,
        /// What is wrong with it, in plain words.
        message: String,
    },
    /// The step is not allowed in the case's current status (409).
    #[error("cannot {step} a case that is {status}")]
    InvalidTransition {
        /// The case's status when the step was asked for.
        status: CaseStatus,
        /// The step asked for.
        step: Step,
    },
    /// The step is allowed in this status but a precondition is unmet (409 too), e.g. resolving
    /// a case that had no session.
    #[error("cannot {step} a case that is {status}: {reason}")]
    PreconditionUnmet {
        /// The case's status when the step was asked for.
        status: CaseStatus,
        /// The step asked for.
        step: Step,
        /// The unmet precondition.
        reason: String,
    },
    /// A step on a case that was never filed.
    #[error("no such case")]
    NotFiled,
    /// Filing a case id that is already in use.
    #[error("a case with this id is already filed")]
    AlreadyFiled,
}

impl CaseError {
    /// Shorthand for an invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        CaseError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error with its field placed under a parent, e.g. `name` → `parties[0].name`.
    pub fn under(self, parent: &str) -> Self {
        match self {
            CaseError::Invalid { field, message } => CaseError::Invalid {
                field: if field.is_empty() {
                    parent.to_string()
                } else if field.starts_with('[') {
                    format!("{parent}{field}")
                } else {
                    format!("{parent}.{field}")
                },
                message,
            },
            other => other,
        }
    }
}
