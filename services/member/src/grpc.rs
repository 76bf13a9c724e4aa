//! Thin gRPC handlers: read the request context, call the use case, wrap the
//! answer.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt, stream::BoxStream};

use laurel_proto::member::v1::{self as pb, member_service_server::MemberService};
use laurel_runtime::{context::request_context, error::Violations};
use tonic::{Request, Response, Status};

use crate::{
    members::{Members, caller_deadline},
    requests,
};

#[tonic::async_trait]
impl MemberService for Members {
    type ExportActivitiesStream = BoxStream<'static, Result<pb::ExportActivitiesResponse, Status>>;

    async fn create_member(
        &self,
        request: Request<pb::CreateMemberRequest>,
    ) -> Result<Response<pb::CreateMemberResponse>, Status> {
        let ctx = request_context(&request)?;
        let member = self.create(&ctx, request.get_ref()).await?;
        Ok(Response::new(pb::CreateMemberResponse {
            member: Some(member),
        }))
    }

    async fn get_member(
        &self,
        request: Request<pb::GetMemberRequest>,
    ) -> Result<Response<pb::GetMemberResponse>, Status> {
        let ctx = request_context(&request)?;
        let pb::GetMemberRequest { member_id } = request.get_ref();
        let mut v = Violations::new();
        let id = requests::member_id(member_id, "member_id", &mut v);
        v.finish()
            .map_err(|v| v.into_status(crate::error::DOMAIN))?;
        let member = self.get(&ctx.program, id.expect("checked")).await?;
        Ok(Response::new(pb::GetMemberResponse {
            member: Some(member),
        }))
    }

    async fn lookup_member(
        &self,
        request: Request<pb::LookupMemberRequest>,
    ) -> Result<Response<pb::LookupMemberResponse>, Status> {
        let ctx = request_context(&request)?;
        let pb::LookupMemberRequest { identity } = request.get_ref();
        let mut v = Violations::new();
        let key = requests::identity(identity.as_ref(), "identity", self.check_context(), &mut v);
        v.finish()
            .map_err(|v| v.into_status(crate::error::DOMAIN))?;
        let member = self.lookup(&ctx.program, &key.expect("checked")).await?;
        Ok(Response::new(pb::LookupMemberResponse {
            member: Some(member),
        }))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let ctx = request_context(&request)?;
        let (members, next_page_token) = self.list(&ctx.program, request.get_ref()).await?;
        Ok(Response::new(pb::ListMembersResponse {
            members,
            next_page_token,
        }))
    }

    async fn update_member(
        &self,
        request: Request<pb::UpdateMemberRequest>,
    ) -> Result<Response<pb::UpdateMemberResponse>, Status> {
        let ctx = request_context(&request)?;
        let member = self.update(&ctx, request.get_ref()).await?;
        Ok(Response::new(pb::UpdateMemberResponse {
            member: Some(member),
        }))
    }

    async fn link_identity(
        &self,
        request: Request<pb::LinkIdentityRequest>,
    ) -> Result<Response<pb::LinkIdentityResponse>, Status> {
        let ctx = request_context(&request)?;
        let member = self.link(&ctx, request.get_ref()).await?;
        Ok(Response::new(pb::LinkIdentityResponse {
            member: Some(member),
        }))
    }

    async fn unlink_identity(
        &self,
        request: Request<pb::UnlinkIdentityRequest>,
    ) -> Result<Response<pb::UnlinkIdentityResponse>, Status> {
        let ctx = request_context(&request)?;
        let member = self.unlink(&ctx, request.get_ref()).await?;
        Ok(Response::new(pb::UnlinkIdentityResponse {
            member: Some(member),
        }))
    }

    async fn merge_members(
        &self,
        request: Request<pb::MergeMembersRequest>,
    ) -> Result<Response<pb::MergeMembersResponse>, Status> {
        let ctx = request_context(&request)?;
        let survivor = self.merge(&ctx, request.get_ref()).await?;
        Ok(Response::new(pb::MergeMembersResponse {
            survivor: Some(survivor),
        }))
    }

    async fn record_activity(
        &self,
        request: Request<pb::RecordActivityRequest>,
    ) -> Result<Response<pb::RecordActivityResponse>, Status> {
        let ctx = request_context(&request)?;
        let (activity, created, member_enrolled) =
            Members::record_activity(self, &ctx.program, request.get_ref()).await?;
        Ok(Response::new(pb::RecordActivityResponse {
            activity: Some(activity),
            created,
            member_enrolled,
        }))
    }

    async fn list_activities(
        &self,
        request: Request<pb::ListActivitiesRequest>,
    ) -> Result<Response<pb::ListActivitiesResponse>, Status> {
        let ctx = request_context(&request)?;
        let (activities, next_page_token) =
            Members::list_activities(self, &ctx.program, request.get_ref()).await?;
        Ok(Response::new(pb::ListActivitiesResponse {
            activities,
            next_page_token,
        }))
    }

    async fn export_activities(
        &self,
        request: Request<pb::ExportActivitiesRequest>,
    ) -> Result<Response<Self::ExportActivitiesStream>, Status> {
        let ctx = request_context(&request)?;
        let batches = Members::export_activities(self, &ctx.program, request.get_ref())?;
        Ok(Response::new(batches.map_err(Status::from).boxed()))
    }

    async fn export_member(
        &self,
        request: Request<pb::ExportMemberRequest>,
    ) -> Result<Response<pb::ExportMemberResponse>, Status> {
        let ctx = request_context(&request)?;
        Ok(Response::new(
            self.export(&ctx.program, request.get_ref()).await?,
        ))
    }

    async fn get_member_card(
        &self,
        request: Request<pb::GetMemberCardRequest>,
    ) -> Result<Response<pb::GetMemberCardResponse>, Status> {
        let received = Instant::now();
        let ctx = request_context(&request)?;
        let deadline = caller_deadline(request.metadata(), received, Some(self.request_timeout));
        let pb::GetMemberCardRequest { member_id } = request.get_ref();
        let mut v = Violations::new();
        let id = requests::member_id(member_id, "member_id", &mut v);
        v.finish()
            .map_err(|v| v.into_status(crate::error::DOMAIN))?;
        let card = self
            .card(&ctx.program, id.expect("checked"), deadline)
            .await?;
        Ok(Response::new(pb::GetMemberCardResponse {
            card: Some(card),
        }))
    }

    async fn erase_member(
        &self,
        request: Request<pb::EraseMemberRequest>,
    ) -> Result<Response<pb::EraseMemberResponse>, Status> {
        let ctx = request_context(&request)?;
        let member = self.erase(&ctx, request.get_ref()).await?;
        Ok(Response::new(pb::EraseMemberResponse {
            member: Some(member),
        }))
    }
}
