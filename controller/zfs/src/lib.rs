//! tidepool-zfs
