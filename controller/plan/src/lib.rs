//! tidepool-plan
