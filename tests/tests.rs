//! steno's one integration-test binary. Tests that run the real model need it provisioned
//! (`models/provision --model all --sherpa`); a missing model fails the test with that command,
//! it never skips.

mod suite;
