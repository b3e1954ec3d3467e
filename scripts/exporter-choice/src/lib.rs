//! Nothing: the bench is the point.
