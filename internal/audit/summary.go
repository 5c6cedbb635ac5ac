package audit

// Summarized is the outcome of a record that stands for many refusals: past
// the denial-record budget (or with the audit volume low on space) denials
// are counted instead of recorded one by one, and each interval ends with
// one summary per reason. Its Detail holds the count, the distinct client
// addresses, a bounded sample and the interval (see internal/denials).
const Summarized Outcome = "summarized"
