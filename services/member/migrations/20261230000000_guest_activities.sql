-- Guest purchases and refunds (RecordActivity with guest set) belong to no
-- member: their member_id is NULL. The member foreign key skips rows with a
-- NULL member_id (MATCH SIMPLE), the member index and the order indexes keep
-- working, and every query by member (ListActivities, ExportMember, erasure,
-- merges) never matches them. Only purchases (1) and refunds (2) may be a
-- guest's.
ALTER TABLE activities ALTER COLUMN member_id DROP NOT NULL;
ALTER TABLE activities ADD CONSTRAINT activities_guest_kind_check
    CHECK (member_id IS NOT NULL OR activity_type IN (1, 2));

-- ExportActivities walks a programme's activities in activity_id order from
-- a cursor: the primary key (program_id, activity_id) is that index, so it
-- needs none of its own.
