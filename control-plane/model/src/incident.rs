//! NIS2 Article 23 reporting deadlines of an incident, as a pure function of when the entity
//! became aware of it, what has been submitted, and `now` — so the control plane (alerts,
//! reports) and the console (countdowns) show the same clock.
//!
//! * Early warning: within 24 hours of becoming aware (Art. 23(4)(a)).
//! * Incident notification: within 72 hours of becoming aware (Art. 23(4)(b)).
//! * Final report: not later than one month after the incident notification was submitted
//!   (Art. 23(4)(d)); until it is submitted, one month after the notification's deadline.
//!
//! "One month" is a calendar month in UTC: the same day of the next month, or its last day
//! when the next month is shorter (31 January → 28/29 February).

use serde::{Deserialize, Serialize};

/// 24 hours in milliseconds.
pub const EARLY_WARNING_MS: i64 = 24 * 3_600_000;

/// 72 hours in milliseconds.
pub const NOTIFICATION_MS: i64 = 72 * 3_600_000;

/// A reporting step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Milestone {
    /// Early warning to the CSIRT / competent authority.
    EarlyWarning,
    /// Incident notification.
    Notification,
    /// Final report.
    FinalReport,
}

impl Milestone {
    /// All, in reporting order.
    pub const ALL: [Milestone; 3] = [
        Milestone::EarlyWarning,
        Milestone::Notification,
        Milestone::FinalReport,
    ];

    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Milestone::EarlyWarning => "early_warning",
            Milestone::Notification => "notification",
            Milestone::FinalReport => "final_report",
        }
    }

    /// Parses the text form.
    pub fn parse(s: &str) -> Option<Milestone> {
        Milestone::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Human name.
    pub fn title(self) -> &'static str {
        match self {
            Milestone::EarlyWarning => "Early warning (24 h)",
            Milestone::Notification => "Incident notification (72 h)",
            Milestone::FinalReport => "Final report (1 month)",
        }
    }
}

/// Where one milestone stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MilestoneState {
    /// Submitted.
    Submitted {
        /// When it was due (Unix ms).
        due_ms: i64,
        /// When it was submitted (Unix ms).
        at_ms: i64,
        /// Whether that was after the deadline.
        late: bool,
    },
    /// Not submitted yet.
    Pending {
        /// When it is due (Unix ms).
        due_ms: i64,
        /// Time left (negative: overdue by that much).
        remaining_ms: i64,
    },
}

impl MilestoneState {
    /// The deadline.
    pub fn due_ms(&self) -> i64 {
        match self {
            MilestoneState::Submitted { due_ms, .. } | MilestoneState::Pending { due_ms, .. } => {
                *due_ms
            }
        }
    }

    /// Pending and past its deadline.
    pub fn overdue(&self) -> bool {
        matches!(self, MilestoneState::Pending { remaining_ms, .. } if *remaining_ms < 0)
    }
}

/// The reporting clock of one incident at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentClock {
    /// Early warning.
    pub early_warning: MilestoneState,
    /// Incident notification.
    pub notification: MilestoneState,
    /// Final report.
    pub final_report: MilestoneState,
    /// The next milestone still to submit and its deadline, if any.
    pub next: Option<(Milestone, i64)>,
}

impl IncidentClock {
    /// The state of one milestone.
    pub fn state(&self, milestone: Milestone) -> &MilestoneState {
        match milestone {
            Milestone::EarlyWarning => &self.early_warning,
            Milestone::Notification => &self.notification,
            Milestone::FinalReport => &self.final_report,
        }
    }
}

/// What has been submitted so far (Unix ms), per milestone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submissions {
    /// Early warning.
    pub early_warning_ms: Option<i64>,
    /// Incident notification.
    pub notification_ms: Option<i64>,
    /// Final report.
    pub final_report_ms: Option<i64>,
}

/// `ts_ms` plus one calendar month (UTC), the day clamped to the target month's length.
pub fn add_one_month(ts_ms: i64) -> i64 {
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000)
    else {
        return ts_ms.saturating_add(31 * 86_400_000);
    };
    let (year, month) = match at.month() {
        time::Month::December => (at.year() + 1, time::Month::January),
        m => (at.year(), m.next()),
    };
    let day = at.day().min(month.length(year));
    match time::Date::from_calendar_date(year, month, day) {
        Ok(date) => {
            let later = at.replace_date(date);
            i64::try_from(later.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
        }
        Err(_) => ts_ms.saturating_add(31 * 86_400_000),
    }
}

fn state(due_ms: i64, submitted: Option<i64>, now_ms: i64) -> MilestoneState {
    match submitted {
        Some(at_ms) => MilestoneState::Submitted {
            due_ms,
            at_ms,
            late: at_ms > due_ms,
        },
        None => MilestoneState::Pending {
            due_ms,
            remaining_ms: due_ms.saturating_sub(now_ms),
        },
    }
}

/// The reporting clock for an incident the entity became aware of at `aware_at_ms`.
pub fn clock(aware_at_ms: i64, submitted: &Submissions, now_ms: i64) -> IncidentClock {
    let early_due = aware_at_ms.saturating_add(EARLY_WARNING_MS);
    let notification_due = aware_at_ms.saturating_add(NOTIFICATION_MS);
    let final_due = add_one_month(submitted.notification_ms.unwrap_or(notification_due));
    let early_warning = state(early_due, submitted.early_warning_ms, now_ms);
    let notification = state(notification_due, submitted.notification_ms, now_ms);
    let final_report = state(final_due, submitted.final_report_ms, now_ms);
    let next = [
        (Milestone::EarlyWarning, &early_warning),
        (Milestone::Notification, &notification),
        (Milestone::FinalReport, &final_report),
    ]
    .into_iter()
    .find_map(|(m, s)| match s {
        MilestoneState::Pending { due_ms, .. } => Some((m, *due_ms)),
        MilestoneState::Submitted { .. } => None,
    });
    IncidentClock {
        early_warning,
        notification,
        final_report,
        next,
    }
}

/// `remaining_ms` as `1d 02h 03m` (or `overdue 1d 02h 03m`), for reports and alerts.
pub fn format_remaining(remaining_ms: i64) -> String {
    let overdue = remaining_ms < 0;
    let minutes = remaining_ms.unsigned_abs() / 60_000;
    let (days, hours, mins) = (minutes / 1440, (minutes / 60) % 24, minutes % 60);
    let text = if days > 0 {
        format!("{days}d {hours:02}h {mins:02}m")
    } else {
        format!("{hours}h {mins:02}m")
    };
    if overdue {
        format!("overdue {text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    // 2026-01-31T10:00:00Z
    const JAN_31: i64 = 1_769_853_600_000;

    #[test]
    fn deadlines_follow_article_23() {
        let aware = JAN_31;
        let c = clock(aware, &Submissions::default(), aware + HOUR);
        assert_eq!(c.early_warning.due_ms(), aware + 24 * HOUR);
        assert_eq!(c.notification.due_ms(), aware + 72 * HOUR);
        // Notification due 2026-02-03T10:00Z; final report one month later: 2026-03-03T10:00Z.
        assert_eq!(c.final_report.due_ms(), 1_772_532_000_000);
        assert_eq!(c.next, Some((Milestone::EarlyWarning, aware + 24 * HOUR)));
        assert_eq!(
            c.early_warning,
            MilestoneState::Pending {
                due_ms: aware + 24 * HOUR,
                remaining_ms: 23 * HOUR
            }
        );
    }

    #[test]
    fn the_final_report_counts_from_the_notification_actually_submitted() {
        let aware = JAN_31;
        let submitted = Submissions {
            early_warning_ms: Some(aware + 2 * HOUR),
            notification_ms: Some(aware + 80 * HOUR),
            final_report_ms: None,
        };
        let c = clock(aware, &submitted, aware + 100 * HOUR);
        assert!(matches!(
            c.early_warning,
            MilestoneState::Submitted { late: false, .. }
        ));
        assert!(matches!(
            c.notification,
            MilestoneState::Submitted { late: true, .. }
        ));
        assert_eq!(c.final_report.due_ms(), add_one_month(aware + 80 * HOUR));
        assert_eq!(c.next.map(|(m, _)| m), Some(Milestone::FinalReport));
    }

    #[test]
    fn overdue_milestones_show_negative_time_left() {
        let c = clock(0, &Submissions::default(), 25 * HOUR);
        assert!(c.early_warning.overdue());
        assert!(!c.notification.overdue());
        assert_eq!(format_remaining(-HOUR - 60_000), "overdue 1h 01m");
        assert_eq!(format_remaining(26 * HOUR + 5 * 60_000), "1d 02h 05m");
    }

    #[test]
    fn a_month_is_a_calendar_month_with_the_day_clamped() {
        // 31 Jan -> 28 Feb (2026 is not a leap year), same time of day.
        assert_eq!(add_one_month(JAN_31), JAN_31 + 28 * 24 * HOUR);
        // 15 Dec 2026 -> 15 Jan 2027.
        let dec_15: i64 = 1_797_328_800_000;
        assert_eq!(add_one_month(dec_15), dec_15 + 31 * 24 * HOUR);
    }

    #[test]
    fn everything_submitted_leaves_nothing_next() {
        let s = Submissions {
            early_warning_ms: Some(1),
            notification_ms: Some(2),
            final_report_ms: Some(3),
        };
        assert_eq!(clock(0, &s, 10).next, None);
    }
}
