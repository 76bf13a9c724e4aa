//! UpdateMember: the fields named by the update mask.

use laurel_proto::member::v1 as pb;
use laurel_runtime::context::RequestContext;

use super::{Members, Result, sealing::consent_proto};
use crate::{
    domain::{self, Consent},
    repo,
    requests::{self, Change},
};

impl Members {
    /// Changes the fields named by the mask.
    pub async fn update(
        &self,
        ctx: &RequestContext,
        req: &pb::UpdateMemberRequest,
    ) -> Result<pb::Member> {
        let cmd = requests::member_update(req, self.check_context())?;
        let id = cmd.member_id;
        let program_c = ctx.program.clone();
        self.change_member(
            ctx,
            "UpdateMember",
            &req.request_id,
            req,
            id,
            move |this, tx, row| {
                Box::pin(async move {
                    let mut profile = this.open_profile(&program_c, row)?;
                    let mut changed = Vec::new();
                    let mut consents_now: Vec<Consent> =
                        repo::consents(tx, program_c.as_str(), &[id])
                            .await?
                            .into_iter()
                            .map(Into::into)
                            .collect();
                    for change in &cmd.changes {
                        match change {
                            Change::Status => {
                                row.status = cmd.status;
                                changed.push("status".to_owned());
                            }
                            Change::Tags => {
                                row.tags.clone_from(&cmd.tags);
                                changed.push("tags".to_owned());
                            }
                            Change::Consents => {
                                consents_now = domain::merge_consents(&consents_now, &cmd.consents);
                                for c in &consents_now {
                                    repo::upsert_consent(tx, program_c.as_str(), id, c).await?;
                                }
                                changed.push("consents".to_owned());
                            }
                            Change::Profile(name) => {
                                domain::set_profile_field(&mut profile, &cmd.profile, name);
                                changed.push(format!("profile.{name}"));
                            }
                        }
                    }
                    this.seal_profile(&program_c, id, row, &profile);
                    let event = pb::MemberUpdated {
                        member_id: id.to_string(),
                        changed_fields: changed,
                        status: i32::from(row.status),
                        tags: row.tags.clone(),
                        consents: consents_now.iter().map(consent_proto).collect(),
                    };
                    this.emit(
                        tx,
                        &program_c,
                        id,
                        this.clock.now(),
                        Some(row.version),
                        &event,
                    )
                    .await
                })
            },
        )
        .await
    }
}
