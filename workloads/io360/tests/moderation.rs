//! `IO360_MODERATION` is written `none` (as in the CommentCluster, where an unquoted `off`
//! reads as a boolean to YAML 1.1 readers); `off`, the earlier spelling, still means the same.

mod common;

use common::logic_config;
use io360_logic::Moderation;

#[test]
fn none_is_the_default_and_off_still_reads_as_none() {
    assert_eq!(logic_config(&[]).moderation, Moderation::Off);
    assert_eq!(
        logic_config(&["--moderation", "none"]).moderation,
        Moderation::Off
    );
    assert_eq!(
        logic_config(&["--moderation", "off"]).moderation,
        Moderation::Off
    );
    assert_eq!(
        logic_config(&["--moderation", "first-time"]).moderation,
        Moderation::FirstTime
    );
}
