//! tidepool-api
